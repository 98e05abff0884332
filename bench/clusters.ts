/**
 * Start and stop 3-member coordination clusters on loopback — faultline's own (`faultline coord`),
 * a real etcd (Debian's etcd-server) and a real ZooKeeper (Debian's zookeeper) — for the
 * compatibility test and the failover bench. Every process is started here and killed by its PID.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseCoordPeers } from "../src/cli/coord-command.ts";
import { freePorts } from "../src/cli/up-coord.ts";
import type { CoordPeer } from "../src/coord/node.ts";

export { freePorts };

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const BUNDLE = join(ROOT, "node_modules/.cache/faultline/faultline-cli.mjs");

/**
 * The CLI bundled into one JavaScript file (packages stay external): a member starts in a
 * fraction of the time a TypeScript loader needs and holds less memory — which also makes its
 * SIGKILL faster to observe, since the kernel closes a dead process's sockets only after it has
 * freed its memory.
 */
export async function cliBundle(): Promise<string> {
  const { build } = await import("esbuild");
  await build({
    entryPoints: [join(ROOT, "src/cli/main.ts")],
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    packages: "external",
    outfile: BUNDLE,
    logLevel: "warning",
  });
  return BUNDLE;
}

export interface Member {
  name: string;
  clientPort: number;
  proc: ChildProcess;
  /** Start it again after a kill (same ports and data). */
  restart(): void;
}

export interface Cluster {
  kind: "faultline" | "etcd" | "zookeeper";
  members: Member[];
  endpoints: string[];
  /** faultline with `agent`: the host agent's socket and the cluster key (hex). */
  agent?: { socket: string; id: string; keyHex: string };
  /** faultline: every member's addresses and the cluster key (hex), for members hosted here. */
  peers?: CoordPeer[];
  keyHex?: string;
  stop(): Promise<void>;
}

/**
 * Make sure a system package's program is here: when it is not and this is a Debian machine run
 * as root, install the packages with apt-get (what the bench needs it does itself). Returns why
 * not, when it still is not here.
 */
export function ensureInstalled(program: string, packages: string[]): string | undefined {
  const present = () => (program.startsWith("/") ? existsSync(program) : have(program));
  if (present()) return undefined;
  if (!have("apt-get") || process.getuid?.() !== 0)
    return `${program} is not installed (apt-get install -y ${packages.join(" ")}, as root)`;
  console.error(`installing ${packages.join(" ")} with apt-get ...`);
  try {
    execFileSync("apt-get", ["update", "-qq"], { stdio: ["ignore", "ignore", "inherit"] });
    execFileSync("apt-get", ["install", "-y", "-qq", ...packages], {
      stdio: ["ignore", "ignore", "inherit"],
      env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" },
    });
  } catch (e) {
    return `apt-get install ${packages.join(" ")} failed: ${(e as Error).message}`;
  }
  return present() ? undefined : `${program} is still missing after apt-get install ${packages.join(" ")}`;
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
  /** Run a host agent the members register with, so that a member's exit is reported as certain. */
  agent?: boolean;
  /** Writes between snapshots (`--snapshot-count`; the member's default when absent). */
  snapshotCount?: number;
  /** `--busy-poll` for every member (e.g. "2ms"). */
  busyPoll?: string;
  /**
   * Members not started as processes: the caller hosts them in its own process (a `CoordNode`
   * with the cluster's `peers` and `keyHex`).
   */
  hostedHere?: string[];
}

/**
 * Extra node options for the coordination members, from FAULTLINE_BENCH_NODE_ARGS — for example
 * `--cpu-prof --cpu-prof-dir=/tmp/prof` to profile them (NODE_OPTIONS refuses --cpu-prof). A
 * profile is written when a member exits on SIGTERM, not on the SIGKILL `stop` sends.
 */
function memberNodeArgs(): string[] {
  return (process.env.FAULTLINE_BENCH_NODE_ARGS ?? "").split(/\s+/).filter(Boolean);
}

/** Three `faultline coord` members, each its own OS process. */
export async function startFaultline(o: FaultlineClusterOptions = {}): Promise<Cluster> {
  const dir = mkdtempSync(join(tmpdir(), "faultline-coord-"));
  const cli = await cliBundle();
  const ports = await freePorts(7);
  const names = ["c1", "c2", "c3"];
  const peers = names.map((n, i) => `${n}=127.0.0.1:${ports[i]}:${ports[i + 3]}`).join(",");
  const key = "ab".repeat(32);
  const env = { ...process.env, FAULTLINE_CLUSTER_KEY: key, ...o.env };
  const socket = join(dir, "agent.sock");
  const extra: Member[] = [];
  if (o.agent) {
    const args = [
      cli,
      "agent",
      "--host",
      "h1",
      "--socket",
      socket,
      "--port",
      String(ports[6]),
      "--peers",
      names.map((n, i) => `${n}=127.0.0.1:${ports[i]}`).join(","),
      "--log-level",
      o.logLevel ?? "warn",
    ];
    const agent: Member = {
      name: "agent:h1",
      clientPort: 0,
      proc: undefined as unknown as ChildProcess,
      restart: () => {
        agent.proc = spawn(process.execPath, args, {
          cwd: ROOT,
          env,
          stdio: ["ignore", "ignore", "inherit"],
        });
      },
    };
    agent.restart();
    extra.push(agent);
    // Members register on the agent's socket: let it come up first.
    const until = Date.now() + 15_000;
    while (!existsSync(socket) && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
  }
  const spawned = names.filter((n) => !o.hostedHere?.includes(n));
  const members: Member[] = spawned.map((name) => {
    const i = names.indexOf(name);
    const args = [
      cli,
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
      ...(o.snapshotCount ? ["--snapshot-count", String(o.snapshotCount)] : []),
      ...(o.busyPoll ? ["--busy-poll", o.busyPoll] : []),
      ...(o.agent ? ["--agent-socket", socket, "--agent-id", "agent:h1"] : []),
    ];
    const m: Member = {
      name,
      clientPort: ports[i + 3]!,
      proc: undefined as unknown as ChildProcess,
      restart: () => {
        m.proc = spawn(process.execPath, [...memberNodeArgs(), ...args], {
          cwd: ROOT,
          env,
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
    ...(o.agent ? { agent: { socket, id: "agent:h1", keyHex: key } } : {}),
    peers: parseCoordPeers(peers),
    keyHex: key,
    stop: () => stopAll([...members, ...extra], dir),
  };
}

/** A cluster of `members` serving clients on 127.0.0.1, its files under `dir`. */
function onLoopback(kind: Cluster["kind"], members: Member[], dir: string): Cluster {
  return {
    kind,
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
  return onLoopback("etcd", members, dir);
}

export const ZK_SERVER = "/usr/share/zookeeper/bin/zkServer.sh";

/**
 * Three real ZooKeeper servers (Debian's zookeeper) with its shipped defaults (tickTime 2 s,
 * initLimit 10, syncLimit 5), each in its own directory on loopback ports. Only what three
 * servers on one machine need is added: their ports, and the admin web server off (all three
 * would want port 8080).
 */
export async function startZooKeeper(): Promise<Cluster> {
  const dir = mkdtempSync(join(tmpdir(), "faultline-zk-"));
  const ports = await freePorts(9);
  const servers = [1, 2, 3].map((id, i) => `server.${id}=127.0.0.1:${ports[3 + i]}:${ports[6 + i]}`);
  const members: Member[] = [1, 2, 3].map((id, i) => {
    const conf = join(dir, `zk${id}`);
    mkdirSync(join(conf, "data"), { recursive: true });
    writeFileSync(join(conf, "data", "myid"), `${id}\n`);
    writeFileSync(
      join(conf, "zoo.cfg"),
      [
        "tickTime=2000",
        "initLimit=10",
        "syncLimit=5",
        `dataDir=${join(conf, "data")}`,
        `clientPort=${ports[i]}`,
        "clientPortAddress=127.0.0.1",
        "admin.enableServer=false",
        ...servers,
        "",
      ].join("\n"),
    );
    const m: Member = {
      name: `zk${id}`,
      clientPort: ports[i]!,
      proc: undefined as unknown as ChildProcess,
      restart: () => {
        // start-foreground execs java: the PID is the server's own.
        const { ZOO_NOEXEC: _, ...env } = process.env; // it would keep the shell as the PID
        m.proc = spawn(ZK_SERVER, ["start-foreground", join(conf, "zoo.cfg")], {
          stdio: ["ignore", "ignore", "ignore"],
          env,
        });
      },
    };
    m.restart();
    return m;
  });
  return onLoopback("zookeeper", members, dir);
}
