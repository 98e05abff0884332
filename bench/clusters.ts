/**
 * Start and stop 3-member coordination clusters on loopback — faultline's own (`faultline coord`)
 * and a real etcd (Debian's etcd-server) — for the compatibility test and the failover bench.
 * Every process is started here and killed by its PID.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("..", import.meta.url));

export interface Member {
  name: string;
  clientPort: number;
  proc: ChildProcess;
  /** Start it again after a kill (same ports and data). */
  restart(): void;
}

export interface Cluster {
  kind: "faultline" | "etcd";
  members: Member[];
  endpoints: string[];
  stop(): Promise<void>;
}

/** `n` distinct free TCP ports on 127.0.0.1. */
export async function freePorts(n: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from(
      { length: n },
      () =>
        new Promise<import("node:net").Server>((resolve, reject) => {
          const s = createServer();
          s.once("error", reject);
          s.listen(0, "127.0.0.1", () => resolve(s));
        }),
    ),
  );
  const ports = servers.map((s) => (s.address() as { port: number }).port);
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  return ports;
}

/** Whether a program is on the PATH. */
export function have(cmd: string): boolean {
  try {
    execFileSync("sh", ["-c", `command -v ${cmd}`], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

function exited(p: ChildProcess): Promise<void> {
  return p.exitCode !== null || p.signalCode !== null
    ? Promise.resolve()
    : new Promise((r) => p.once("exit", () => r()));
}

async function stopAll(members: Member[], dir: string): Promise<void> {
  for (const m of members) {
    m.proc.kill("SIGCONT");
    m.proc.kill("SIGKILL");
  }
  await Promise.all(members.map((m) => exited(m.proc)));
  rmSync(dir, { recursive: true, force: true });
}

export interface FaultlineClusterOptions {
  durability?: "sync" | "memory";
  electionTimeout?: string;
  heartbeat?: string;
  /** Extra environment (the cluster key is set here). */
  env?: NodeJS.ProcessEnv;
  logLevel?: string;
}

/** Three `faultline coord` members, each its own OS process. */
export async function startFaultline(o: FaultlineClusterOptions = {}): Promise<Cluster> {
  const dir = mkdtempSync(join(tmpdir(), "faultline-coord-"));
  const ports = await freePorts(6);
  const names = ["c1", "c2", "c3"];
  const peers = names.map((n, i) => `${n}=127.0.0.1:${ports[i]}:${ports[i + 3]}`).join(",");
  const key = "ab".repeat(32);
  const members: Member[] = names.map((name, i) => {
    const args = [
      "--import",
      "tsx",
      join(ROOT, "src/cli/main.ts"),
      "coord",
      "--id",
      name,
      "--peers",
      peers,
      "--durability",
      o.durability ?? "sync",
      "--data",
      join(dir, name),
      "--log-level",
      o.logLevel ?? "warn",
      ...(o.electionTimeout ? ["--election-timeout", o.electionTimeout] : []),
      ...(o.heartbeat ? ["--heartbeat", o.heartbeat] : []),
    ];
    const m: Member = {
      name,
      clientPort: ports[i + 3]!,
      proc: undefined as unknown as ChildProcess,
      restart: () => {
        m.proc = spawn(process.execPath, args, {
          cwd: ROOT,
          env: { ...process.env, FAULTLINE_CLUSTER_KEY: key, ...o.env },
          stdio: ["ignore", "ignore", "inherit"],
        });
      },
    };
    m.restart();
    return m;
  });
  return {
    kind: "faultline",
    members,
    endpoints: members.map((m) => `127.0.0.1:${m.clientPort}`),
    stop: () => stopAll(members, dir),
  };
}

/** Three real etcd members (Debian's etcd-server) with its defaults (heartbeat 100 ms, election 1 s). */
export async function startEtcd(): Promise<Cluster> {
  const dir = mkdtempSync(join(tmpdir(), "faultline-etcd-"));
  const ports = await freePorts(6);
  const names = ["c1", "c2", "c3"];
  const initial = names.map((n, i) => `${n}=http://127.0.0.1:${ports[i]}`).join(",");
  const members: Member[] = names.map((name, i) => {
    const args = [
      "--name",
      name,
      "--data-dir",
      join(dir, name),
      "--listen-peer-urls",
      `http://127.0.0.1:${ports[i]}`,
      "--initial-advertise-peer-urls",
      `http://127.0.0.1:${ports[i]}`,
      "--listen-client-urls",
      `http://127.0.0.1:${ports[i + 3]}`,
      "--advertise-client-urls",
      `http://127.0.0.1:${ports[i + 3]}`,
      "--initial-cluster",
      initial,
      "--initial-cluster-state",
      "new",
      "--initial-cluster-token",
      "faultline-bench",
      "--log-level",
      "error",
    ];
    const m: Member = {
      name,
      clientPort: ports[i + 3]!,
      proc: undefined as unknown as ChildProcess,
      restart: () => {
        m.proc = spawn("etcd", args, { stdio: ["ignore", "ignore", "ignore"] });
      },
    };
    m.restart();
    return m;
  });
  return {
    kind: "etcd",
    members,
    endpoints: members.map((m) => `127.0.0.1:${m.clientPort}`),
    stop: () => stopAll(members, dir),
  };
}
