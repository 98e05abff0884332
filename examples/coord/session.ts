/**
 * The coordination service as an etcd application sees it: three `faultline coord` members and a
 * host agent, driven with the `etcd3` package (any etcd v3 client works unchanged).
 *
 * A worker process registers with the host agent and keeps `workers/<id>` on a lease it owns
 * (gRPC metadata `faultline-owner: <id>`). When the worker is SIGKILLed, the key goes within
 * milliseconds — the agent's certain process-exit report revokes the lease — not after the
 * lease's 600 s TTL, which is all etcd itself could do. Then the Raft leader is SIGKILLed: the
 * watch carries on and the next write is acknowledged by the new leader.
 *
 *   npx tsx examples/coord/session.ts
 */
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import { Etcd3 } from "etcd3";
import { AgentClient } from "../../src/agent/agent-client.ts";
import { freePorts } from "../../src/cli/up-coord.ts";
import { etcdProto, memberId } from "../../src/coord/etcd-wire.ts";

const SELF = fileURLToPath(import.meta.url);
const CLI = fileURLToPath(new URL("../../src/cli/main.ts", import.meta.url));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

if (process.argv[2] === "--worker") await worker(process.argv.slice(3));
else await main();

/** The worker: register with the agent, then hold `workers/<id>` on a lease this process owns. */
async function worker([id, keyHex, socketPath, endpoint]: string[]): Promise<void> {
  const agent = new AgentClient({
    id: id!,
    agentId: "agent:h1",
    socketPath: socketPath!,
    clusterKey: Buffer.from(keyHex!, "hex"),
  });
  await agent.start();
  while (!agent.connected()) await sleep(5);
  const pb = etcdProto();
  const lease = new pb.Lease(endpoint, grpc.credentials.createInsecure());
  const kv = new pb.KV(endpoint, grpc.credentials.createInsecure());
  const owner = new grpc.Metadata();
  owner.set("faultline-owner", id!); // ties the lease to this process's life
  const call = <T>(fn: (cb: (e: Error | null, r: T) => void) => void) =>
    new Promise<T>((resolve, reject) => fn((e, r) => (e ? reject(e) : resolve(r))));
  const granted = await call<{ ID: string }>((cb) => lease.LeaseGrant({ TTL: 600 }, owner, cb));
  await call((cb) =>
    kv.Put({ key: Buffer.from(`workers/${id}`), value: Buffer.from("busy"), lease: granted.ID }, cb),
  );
  process.stdout.write(`${JSON.stringify({ lease: granted.ID })}\n`);
  setInterval(() => {}, 1000); // work until killed
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "faultline-coord-example-"));
  const key = randomBytes(32).toString("hex");
  const env = { ...process.env, FAULTLINE_CLUSTER_KEY: key };
  const socket = join(dir, "agent.sock");
  const names = ["c1", "c2", "c3"];
  const ports = await freePorts(2 * names.length); // held open together: no port given twice
  const raft = ports.slice(0, names.length);
  const client = ports.slice(names.length);
  const peers = names.map((n, i) => `${n}=127.0.0.1:${raft[i]}:${client[i]}`).join(",");
  const endpoints = client.map((p) => `127.0.0.1:${p}`);
  const procs = new Map<string, ChildProcess>();
  const start = (name: string, args: string[]) =>
    procs.set(
      name,
      spawn(process.execPath, ["--import", "tsx", CLI, ...args, "--log-level", "warn"], {
        env,
        stdio: ["ignore", "ignore", "inherit"],
      }),
    );
  let etcd: Etcd3 | undefined;
  try {
    const agentPeers = names.map((n, i) => `${n}=127.0.0.1:${raft[i]}`).join(",");
    start("agent", ["agent", "--host", "h1", "--socket", socket, "--peers", agentPeers]);
    for (let t = 0; !existsSync(socket); t++) {
      if (t > 300) throw new Error("the host agent did not start");
      await sleep(50);
    }
    for (const n of names) {
      start(n, [
        "coord",
        "--id",
        n,
        "--peers",
        peers,
        "--data",
        join(dir, n),
        "--agent-socket",
        socket,
        "--agent-id",
        "agent:h1",
      ]);
    }
    etcd = new Etcd3({ hosts: endpoints });
    await retry(() => etcd!.put("hello").value("world").exec(), 30_000);
    console.log(
      `3 coordination members and a host agent are up; etcd3 wrote hello=${await etcd.get("hello").string()}`,
    );

    // Watch the workers' keys, as a scheduler would.
    const seen: Array<{ what: string; key: string; at: number }> = [];
    const watcher = await etcd.watch().prefix("workers/").create();
    watcher.on("put", (kv) => seen.push({ what: "put", key: kv.key.toString(), at: performance.now() }));
    watcher.on("delete", (kv) =>
      seen.push({ what: "delete", key: kv.key.toString(), at: performance.now() }),
    );

    // A worker holds workers/w1 on a lease it owns; then it dies without a word.
    const w = spawn(
      process.execPath,
      ["--import", "tsx", SELF, "--worker", "w1", key, socket, endpoints[0]!],
      {
        stdio: ["ignore", "pipe", "inherit"],
      },
    );
    procs.set("w1", w);
    const first = await new Promise<string>((resolve) =>
      createInterface({ input: w.stdout! }).once("line", resolve),
    );
    console.log(`worker w1 holds workers/w1 on lease ${JSON.parse(first).lease} (TTL 600 s)`);
    await waitFor(() => seen.some((e) => e.what === "put"), "the watch to see workers/w1");
    const killedAt = performance.now();
    w.kill("SIGKILL");
    console.log("worker w1 was SIGKILLed");
    await waitFor(() => seen.some((e) => e.what === "delete"), "workers/w1 to go");
    const gone = seen.find((e) => e.what === "delete")!;
    console.log(
      `the watch saw ${gone.key} deleted ${(gone.at - killedAt).toFixed(1)} ms after the SIGKILL, not after its 600 s TTL`,
    );

    // Now the Raft leader dies.
    const status = await etcd.maintenance.status();
    const leader = names.find((n) => memberId(n) === String(status.leader))!;
    const killed = performance.now();
    procs.get(leader)!.kill("SIGKILL");
    console.log(`the leader, ${leader}, was SIGKILLed`);
    await retry(() => etcd!.put("workers/w2").value("busy").exec(), 10_000);
    console.log(
      `a write after the leader's SIGKILL was acknowledged ${(performance.now() - killed).toFixed(0)} ms later (with etcd3's own retries)`,
    );
    await waitFor(
      () => seen.some((e) => e.what === "put" && e.key === "workers/w2"),
      "the watch to carry on",
    );
    console.log("the watch carried on across the failover: it saw workers/w2 put");
    await watcher.cancel();
  } finally {
    etcd?.close();
    for (const p of procs.values()) if (p.exitCode === null && p.signalCode === null) p.kill("SIGTERM");
    await sleep(300);
    for (const p of procs.values()) if (p.exitCode === null && p.signalCode === null) p.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  }
}

async function retry<T>(fn: () => Promise<T>, withinMs: number): Promise<T> {
  const until = performance.now() + withinMs;
  for (;;) {
    try {
      return await fn();
    } catch (e) {
      if (performance.now() > until) throw e;
      await sleep(5);
    }
  }
}

async function waitFor(cond: () => boolean, what: string, withinMs = 10_000): Promise<void> {
  const until = performance.now() + withinMs;
  while (!cond()) {
    if (performance.now() > until) throw new Error(`timed out waiting for ${what}`);
    await sleep(2);
  }
}
