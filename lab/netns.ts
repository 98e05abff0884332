/**
 * The lab's network: "hosts" that are Linux network namespaces, each with one veth link to a
 * bridge in a switch namespace of its own. Nothing is created in the machine's own namespace:
 * deleting the lab's namespaces deletes every link, bridge, address, qdisc and iptables rule with
 * them. Every process the lab starts is recorded by PID in a state file, so that a later run can
 * clean up after one that was killed (and kill only what the lab started).
 */
import { type ChildProcess, type SpawnOptions, spawn, spawnSync } from "node:child_process";
import { appendFileSync, existsSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";

/** Every namespace the lab makes starts with this, and nothing else on the machine may. */
export const PREFIX = "fllab-";
export const SWITCH_NS = `${PREFIX}sw`;
/** The lab's subnet: host i is SUBNET.i; traffic goes nowhere else. */
export const SUBNET = "10.77.0";
/** Where the lab keeps its state (PIDs, Unix sockets) between a run and the clean-up after it. */
export const STATE_DIR = "/run/faultline-lab";
const PIDS = join(STATE_DIR, "pids");

export interface LabHost {
  /** "h1", ... */
  name: string;
  ns: string;
  addr: string;
  /** The host's link as the switch sees it (taking it down silences the host). */
  switchPort: string;
}

/** Run a command; on failure throw with what it printed. */
export function run(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: "utf8" });
  if (r.error) throw new Error(`${cmd} ${args.join(" ")}: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")} failed (${r.status}): ${r.stderr.trim()}`);
  return r.stdout;
}

/** Run a command inside a namespace. */
export function inNs(ns: string, cmd: string, args: string[]): string {
  return run("ip", ["netns", "exec", ns, cmd, ...args]);
}

function have(cmd: string): boolean {
  return spawnSync("sh", ["-c", `command -v ${cmd}`], { stdio: "ignore" }).status === 0;
}

/**
 * Why the lab cannot run here, or undefined when it can: it needs root, iproute2 and iptables,
 * and the kernel must let it make a namespace.
 */
export function whyNot(): string | undefined {
  if (process.platform !== "linux") return "the lab needs Linux network namespaces";
  if (process.getuid?.() !== 0) return "the lab needs root (network namespaces, iptables, tc)";
  for (const cmd of ["ip", "iptables", "tc", "python3"])
    if (!have(cmd)) return `the lab needs \`${cmd}\` (Debian: apt-get install -y iproute2 iptables python3)`;
  const probe = `${PREFIX}probe`;
  try {
    spawnSync("ip", ["netns", "del", probe], { stdio: "ignore" });
    run("ip", ["netns", "add", probe]);
    inNs(probe, "iptables", ["-S"]);
  } catch (e) {
    return `cannot make a network namespace with iptables here: ${(e as Error).message}`;
  } finally {
    spawnSync("ip", ["netns", "del", probe], { stdio: "ignore" });
  }
  return undefined;
}

/** The lab's namespaces that exist now. */
export function labNamespaces(): string[] {
  const out = spawnSync("ip", ["netns", "list"], { encoding: "utf8" }).stdout ?? "";
  return out
    .split("\n")
    .map((l) => l.split(" ")[0]!)
    .filter((n) => n.startsWith(PREFIX));
}

/** PIDs the lab recorded as started, and still alive. */
export function labPids(): number[] {
  if (!existsSync(PIDS)) return [];
  return readFileSync(PIDS, "utf8")
    .split("\n")
    .filter(Boolean)
    .map(Number)
    .filter((pid) => Number.isInteger(pid) && alive(pid));
}

export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** The namespace a process is in, by name (empty when it is in none of the named ones). */
function namespaceOf(pid: number): string {
  return (spawnSync("ip", ["netns", "identify", String(pid)], { encoding: "utf8" }).stdout ?? "").trim();
}

/**
 * Remove everything a lab run made: every process inside a lab namespace (the kernel's list, and
 * the PIDs it recorded that are still inside one, so a reused PID is never hit), then every lab
 * namespace (its links, bridge, rules
 * and qdiscs go with it), then the state directory. Safe to run at any time, twice, or with
 * nothing to do. Returns what it removed.
 */
export function cleanAll(): { processes: number; namespaces: string[] } {
  // Whatever runs inside a lab namespace was started by the lab: the kernel's list of them
  // (`ip netns pids`) also finds a process a killed run had started but not yet recorded.
  const inLab = () => [
    ...new Set([
      ...labNamespaces().flatMap((ns) => nsPids(ns)),
      ...labPids().filter((pid) => namespaceOf(pid).startsWith(PREFIX)),
    ]),
  ];
  const victims = inLab();
  for (const pid of victims) {
    try {
      process.kill(pid, "SIGCONT");
      process.kill(pid, "SIGKILL");
    } catch {
      // already gone
    }
  }
  // Deleting a namespace's name does not end the processes in it: wait until they are gone.
  const end = Date.now() + 5000;
  while (inLab().length > 0 && Date.now() < end) sleepSync(20);
  const namespaces = labNamespaces();
  for (const ns of namespaces) spawnSync("ip", ["netns", "del", ns], { stdio: "ignore" });
  rmSync(STATE_DIR, { recursive: true, force: true });
  return { processes: victims.length, namespaces };
}

/** The processes inside a named namespace, as the kernel lists them. */
export function nsPids(ns: string): number[] {
  const out = spawnSync("ip", ["netns", "pids", ns], { encoding: "utf8" }).stdout ?? "";
  return out
    .split("\n")
    .filter(Boolean)
    .map(Number)
    .filter((pid) => Number.isInteger(pid) && pid !== process.pid);
}

function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/**
 * A lab network of `n` hosts on one bridge. Build it with `LabNet.create`; `destroy()` (also
 * called by `cleanAll()`) removes it.
 */
export class LabNet {
  private constructor(readonly hosts: LabHost[]) {}

  static create(n: number): LabNet {
    cleanAll();
    mkdirSync(STATE_DIR, { recursive: true });
    const hosts: LabHost[] = [];
    try {
      run("ip", ["netns", "add", SWITCH_NS]);
      run("ip", ["-n", SWITCH_NS, "link", "add", "br0", "type", "bridge"]);
      run("ip", ["-n", SWITCH_NS, "link", "set", "br0", "up"]);
      for (let i = 1; i <= n; i++) {
        const h: LabHost = {
          name: `h${i}`,
          ns: `${PREFIX}h${i}`,
          addr: `${SUBNET}.${i}`,
          switchPort: `vh${i}`,
        };
        run("ip", ["netns", "add", h.ns]);
        run("ip", [
          "-n",
          SWITCH_NS,
          "link",
          "add",
          h.switchPort,
          "type",
          "veth",
          "peer",
          "name",
          "eth0",
          "netns",
          h.ns,
        ]);
        run("ip", ["-n", SWITCH_NS, "link", "set", h.switchPort, "master", "br0"]);
        run("ip", ["-n", SWITCH_NS, "link", "set", h.switchPort, "up"]);
        run("ip", ["-n", h.ns, "addr", "add", `${h.addr}/24`, "dev", "eth0"]);
        run("ip", ["-n", h.ns, "link", "set", "eth0", "up"]);
        run("ip", ["-n", h.ns, "link", "set", "lo", "up"]);
        hosts.push(h);
      }
    } catch (e) {
      cleanAll();
      throw e;
    }
    return new LabNet(hosts);
  }

  host(name: string): LabHost {
    const h = this.hosts.find((x) => x.name === name);
    if (!h) throw new Error(`no lab host ${name}`);
    return h;
  }

  /**
   * Start a process inside a host's namespace (`ip netns exec` execs in place: the PID is the
   * program's own). Its PID is recorded before anything else can happen to it.
   */
  spawn(h: LabHost, cmd: string, args: string[], options: SpawnOptions = {}): ChildProcess {
    const proc = spawn("ip", ["netns", "exec", h.ns, cmd, ...args], options);
    if (proc.pid !== undefined) appendFileSync(PIDS, `${proc.pid}\n`);
    return proc;
  }

  /** The host falls silent: its link goes down at the switch, so nothing enters or leaves it. */
  silence(h: LabHost): void {
    run("ip", ["-n", SWITCH_NS, "link", "set", h.switchPort, "down"]);
  }

  restore(h: LabHost): void {
    run("ip", ["-n", SWITCH_NS, "link", "set", h.switchPort, "up"]);
  }

  /** Drop what `from` sends to `to` (one direction), with iptables in `from`'s namespace. */
  drop(from: LabHost, to: LabHost): void {
    inNs(from.ns, "iptables", ["-A", "OUTPUT", "-d", to.addr, "-j", "DROP"]);
    inNs(to.ns, "iptables", ["-A", "INPUT", "-s", from.addr, "-j", "DROP"]);
  }

  undrop(from: LabHost, to: LabHost): void {
    inNs(from.ns, "iptables", ["-D", "OUTPUT", "-d", to.addr, "-j", "DROP"]);
    inNs(to.ns, "iptables", ["-D", "INPUT", "-s", from.addr, "-j", "DROP"]);
  }

  /** Drop a share `p` of the packets a host receives, at random (iptables `statistic`). */
  loss(h: LabHost, p: number): void {
    inNs(h.ns, "iptables", [
      "-A",
      "INPUT",
      "-m",
      "statistic",
      "--mode",
      "random",
      "--probability",
      String(p),
      "-j",
      "DROP",
    ]);
  }

  /** A token-bucket rate limit on what the host sends (its queue holds up to `latencyMs`). */
  rateLimit(h: LabHost, rate: string, latencyMs: number): void {
    inNs(h.ns, "tc", [
      "qdisc",
      "add",
      "dev",
      "eth0",
      "root",
      "tbf",
      "rate",
      rate,
      "burst",
      "16kbit",
      "latency",
      `${latencyMs}ms`,
    ]);
  }

  /** Take every rule, limit and loss off every host. */
  heal(): void {
    for (const h of this.hosts) {
      inNs(h.ns, "iptables", ["-F"]);
      spawnSync("ip", ["netns", "exec", h.ns, "tc", "qdisc", "del", "dev", "eth0", "root"], {
        stdio: "ignore",
      });
      this.restore(h);
    }
  }

  destroy(): void {
    cleanAll();
  }
}
