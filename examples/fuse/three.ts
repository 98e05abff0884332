/**
 * Three processes share a FUSE group; one is SIGKILLed; the other two print the notification
 * and its reason. A host agent (here, in this launcher) makes the exit certain within
 * milliseconds, so the group fails at once rather than after a suspicion timeout.
 *
 *   npx tsx examples/fuse/three.ts [--signal]     (--signal: n2 signals instead of a kill)
 */
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { HostAgent } from "../../src/agent/host-agent.ts";

const MEMBER = fileURLToPath(new URL("./member.ts", import.meta.url));

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, "127.0.0.1", () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => resolve(p));
    });
  });
}

export interface ThreeResult {
  group: string;
  notifications: Array<{ id: string; reason: unknown; afterMs: number }>;
}

export async function runThree(
  o: { log?: (l: string) => void; signal?: boolean } = {},
): Promise<ThreeResult> {
  const log = o.log ?? (() => {});
  const dir = mkdtempSync(join(tmpdir(), "faultline-fuse-"));
  const key = randomBytes(32);
  const socketPath = join(dir, "agent.sock");
  const agent = new HostAgent({
    host: "local",
    socketPath,
    clusterKey: key,
    swim: { probeIntervalMs: 200, probeTimeoutMs: 100 },
  });
  await agent.start();
  const ids = ["n1", "n2", "n3"];
  const ports = Object.fromEntries(await Promise.all(ids.map(async (id) => [id, await freePort()] as const)));
  const addr = agent.cluster.address() as { host: string; port: number };
  const procs = new Map<string, ChildProcess>();
  const lines: Array<{
    id: string;
    at: number;
    ready?: boolean;
    created?: string;
    failed?: string;
    reason?: unknown;
  }> = [];
  try {
    for (const id of ids) {
      const peers = ids
        .filter((p) => p !== id)
        .map((p) => `${p}=127.0.0.1:${ports[p]}`)
        .concat(`${agent.id}=${addr.host}:${addr.port}`)
        .join(",");
      const args = [
        id,
        String(ports[id]),
        peers,
        key.toString("hex"),
        socketPath,
        agent.id,
        id === "n1" ? "create" : "",
      ];
      const child = spawn(process.execPath, ["--import", "tsx", MEMBER, ...args], {
        stdio: ["ignore", "pipe", "inherit"],
      });
      procs.set(id, child);
      createInterface({ input: child.stdout! }).on("line", (l) => {
        const m = JSON.parse(l);
        lines.push(m);
        log(l);
      });
    }
    agent.join(Object.fromEntries(ids.map((id) => [id, { host: "127.0.0.1", port: ports[id]! }])));
    const until = async (cond: () => boolean, what: string) => {
      const end = Date.now() + 30_000;
      while (!cond()) {
        if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 10));
      }
    };
    await until(() => lines.some((l) => l.created), "the group to be created");
    const group = lines.find((l) => l.created)!.created!;
    await new Promise((r) => setTimeout(r, 200)); // the commit reaches everyone
    const t0 = Date.now();
    if (o.signal) {
      procs.get("n2")!.kill("SIGUSR2"); // n2 signals the group
    } else {
      procs.get("n3")!.kill("SIGKILL"); // by the PID we started
    }
    await until(
      () => lines.filter((l) => l.failed === group).length >= (o.signal ? 3 : 2),
      "the notifications",
    );
    const notifications = lines
      .filter((l) => l.failed === group)
      .map((l) => ({ id: l.id, reason: l.reason, afterMs: l.at - t0 }));
    return { group, notifications };
  } finally {
    for (const c of procs.values()) c.kill("SIGKILL");
    await Promise.all(
      [...procs.values()].map((c) =>
        c.exitCode !== null || c.signalCode !== null ? undefined : new Promise((r) => c.once("exit", r)),
      ),
    );
    await agent.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const signal = process.argv.includes("--signal");
  const r = await runThree({ signal });
  console.log(`group ${r.group}: ${signal ? "n2 signalled it" : "n3 was SIGKILLed"}`);
  for (const n of r.notifications)
    console.log(`${n.id} was told after ${n.afterMs} ms: ${JSON.stringify(n.reason)}`);
}
