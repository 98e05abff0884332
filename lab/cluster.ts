/**
 * faultline on the lab's hosts: on every host a host agent, one node registered with it, and an
 * echo server for the plain-Linux observers; on the corruption pair, a bit-flipping relay on the
 * path each way. Every process is a child of this one (over an IPC channel, so the node's
 * reports reach us as they happen) and is stopped by its PID.
 */
import type { ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { ToNode, ToSupervisor } from "../src/cli/ipc.ts";
import { conditionKey, type FailureReport, type ReportEvent } from "../src/detect/report.ts";
import { describeFuseReason } from "../src/fuse/messages.ts";
import { type LabHost, type LabNet, STATE_DIR } from "./netns.ts";

export const ROOT = fileURLToPath(new URL("..", import.meta.url));
export const NODE_PORT = 7000;
export const AGENT_PORT = 7100;
export const ECHO_PORT = 7200;
export const RELAY_PORT = 7301;
/** On the first host of the corrupt pair: a corrupting relay to the other's echo server. */
export const ECHO_RELAY_PORT = 7302;
/** The witnesses when a scenario runs with leases and fences (none on h3, the usual target). */
export const WITNESSES = ["agent:h1", "agent:h2", "agent:h4"];

/** Monotonic milliseconds (CLOCK_MONOTONIC, the clock Python's time.monotonic() reads too). */
export const now = (): number => Number(process.hrtime.bigint()) / 1e6;

export interface LabOptions {
  /** The CLI bundle (bench/clusters.ts cliBundle()). */
  bundle: string;
  probeInterval: string;
  probeTimeout: string;
  suspicionMult: number;
  /** Print the processes' stderr (debugging). */
  verbose?: boolean;
}

export interface Seen {
  at: number;
  observer: string;
  report: ReportEvent;
}

/** What a node said of FUSE groups: created (at the creator), or failed (at every member told). */
export interface FuseSeen {
  at: number;
  node: string;
  type: "created" | "failed" | "create-failed";
  group?: string;
  /** The reason a group failed, in words; why a creation failed. */
  detail: string;
}

interface Child {
  name: string;
  host: LabHost;
  role: "node" | "agent" | "echo" | "relay";
  args: string[];
  cmd: string;
  proc?: ChildProcess;
  state: "running" | "stopped" | "exited";
  /** Lines a relay prints (its on/off answers). */
  lines: string[];
}

export class LabCluster {
  readonly seen: Seen[] = [];
  readonly fuse: FuseSeen[] = [];
  /** Each observer's current failure conditions, by condition key. */
  readonly current = new Map<string, Map<string, FailureReport>>();
  /** Each node's latest view of its peers' membership. */
  readonly views = new Map<string, Record<string, string | undefined>>();
  private readonly children: Child[] = [];
  private readonly key = randomBytes(32).toString("hex");
  private stopping = false;

  constructor(
    readonly net: LabNet,
    private readonly o: LabOptions,
  ) {}

  nodeId(h: LabHost): string {
    return `n${h.name.slice(1)}`;
  }

  /** Where `from`'s node reaches `to`'s node: directly, or through the relay on the corrupt pair. */
  private nodeAddr(from: LabHost, to: LabHost, pair: readonly string[]): string {
    const relayed = pair.includes(from.name) && pair.includes(to.name) && from !== to;
    return relayed ? `${from.addr}:${RELAY_PORT}` : `${to.addr}:${NODE_PORT}`;
  }

  /**
   * Lay out every host's processes: an echo server, an agent and a node on each, and on the two
   * hosts of `corruptPair` (only when a scenario needs them: a user-space hop on a path is a
   * slower path) relays that can flip bits, through which those two nodes reach each other.
   */
  private plan(corruptPair: readonly [string, string] | readonly [], fencing: boolean): void {
    this.children.length = 0;
    const hosts = this.net.hosts;
    const swim = [
      "--probe-interval",
      this.o.probeInterval,
      "--probe-timeout",
      this.o.probeTimeout,
      "--suspicion-mult",
      String(this.o.suspicionMult),
      // Leases and fences: the agents of h1, h2 and h4 are the witnesses, so that a silent host's
      // crash becomes certain once its agent's lease has surely ended.
      ...(fencing ? ["--witnesses", WITNESSES.join(",")] : []),
    ];
    const nodes = (except?: LabHost) =>
      hosts
        .filter((h) => h !== except)
        .map(
          (h) =>
            `${this.nodeId(h)}=${except ? this.nodeAddr(except, h, corruptPair) : `${h.addr}:${NODE_PORT}`}`,
        )
        .join(",");
    for (const h of hosts) {
      const socket = join(STATE_DIR, `${h.name}.sock`);
      this.add(h, "echo", `echo:${h.name}`, "python3", [
        join(ROOT, "lab/tcp_probe.py"),
        "serve",
        String(ECHO_PORT),
      ]);
      this.add(h, "agent", `agent:${h.name}`, process.execPath, [
        this.o.bundle,
        "agent",
        "--host",
        h.name,
        "--socket",
        socket,
        "--listen",
        h.addr,
        "--port",
        String(AGENT_PORT),
        "--peers",
        nodes(),
        ...swim,
      ]);
    }
    for (const h of hosts) {
      if ((corruptPair as readonly string[]).includes(h.name)) {
        const other = this.net.host(corruptPair.find((n) => n !== h.name)!);
        const relay = (name: string, port: number, to: number) =>
          this.add(h, "relay", name, process.execPath, [
            ...["--import", "tsx", join(ROOT, "lab/corrupt-relay.ts")],
            ...["--listen", `${h.addr}:${port}`, "--to", `${other.addr}:${to}`],
          ]);
        relay(`relay:${h.name}`, RELAY_PORT, NODE_PORT);
        if (h.name === corruptPair[0]) relay(`erelay:${h.name}`, ECHO_RELAY_PORT, ECHO_PORT);
      }
      this.add(h, "node", this.nodeId(h), process.execPath, [
        this.o.bundle,
        "node",
        "--id",
        this.nodeId(h),
        "--host",
        h.addr,
        "--port",
        String(NODE_PORT),
        "--peers",
        nodes(h),
        "--agent-socket",
        join(STATE_DIR, `${h.name}.sock`),
        "--agent-id",
        `agent:${h.name}`,
        ...swim,
      ]);
    }
  }

  private add(host: LabHost, role: Child["role"], name: string, cmd: string, args: string[]): void {
    this.children.push({ name, host, role, cmd, args, state: "exited", lines: [] });
  }

  private launch(c: Child): void {
    const proc = this.net.spawn(c.host, c.cmd, c.args, {
      cwd: ROOT,
      env: { ...process.env, FAULTLINE_CLUSTER_KEY: this.key },
      stdio: [c.role === "relay" ? "pipe" : "ignore", "pipe", this.o.verbose ? "inherit" : "ignore", "ipc"],
    });
    c.proc = proc;
    c.state = "running";
    c.lines = [];
    proc.stdout!.setEncoding("utf8");
    proc.stdout!.on("data", (d: string) => c.lines.push(...d.split("\n").filter(Boolean)));
    proc.on("message", (m: ToSupervisor) => this.onMessage(c, m));
    proc.on("exit", () => {
      if (c.proc === proc) c.state = "exited";
    });
  }

  private onMessage(c: Child, m: ToSupervisor): void {
    if (m.type === "report") {
      // The node's own stamp (same monotonic clock as now() and the TCP probes): IPC is not the
      // detector's latency.
      const at = m.mono ?? now();
      this.seen.push({ at, observer: c.name, report: m.report });
      const cur = this.current.get(c.name) ?? new Map<string, FailureReport>();
      this.current.set(c.name, cur);
      if (m.report.type === "failure") cur.set(conditionKey(m.report), m.report);
      else cur.delete(conditionKey(m.report));
    } else if (m.type === "fuse-created") {
      this.fuse.push({
        at: now(),
        node: c.name,
        type: "created",
        group: m.group,
        detail: m.members.join(" "),
      });
    } else if (m.type === "fuse-create-failed") {
      this.fuse.push({ at: now(), node: c.name, type: "create-failed", detail: m.detail });
    } else if (m.type === "fuse-failed") {
      this.fuse.push({
        at: now(),
        node: c.name,
        type: "failed",
        group: m.group,
        detail: describeFuseReason(m.reason),
      });
    } else if (m.type === "status") {
      const view: Record<string, string | undefined> = {};
      for (const [peer, s] of Object.entries(m.peers)) view[peer] = s.member;
      this.views.set(c.name, view);
    }
  }

  /** Ask `creator`'s node to create a FUSE group with `members` (their node ids). */
  fuseCreate(creator: LabHost, members: string[]): void {
    const c = this.child(this.nodeId(creator));
    c.proc?.send({ type: "fuse-create", members } satisfies ToNode);
  }

  child(name: string): Child {
    const c = this.children.find((x) => x.name === name);
    if (!c) throw new Error(`no lab process ${name}`);
    return c;
  }

  /** The processes of a host (its agent, node, echo server and relay). */
  onHost(h: LabHost): Child[] {
    return this.children.filter((c) => c.host === h);
  }

  signal(c: Child, sig: NodeJS.Signals): void {
    if (c.state === "exited" || !c.proc?.pid) return;
    c.proc.kill(sig);
    if (sig === "SIGSTOP") c.state = "stopped";
    else if (sig === "SIGCONT") c.state = "running";
  }

  /** Start every exited process again (a new life); the reports it left are forgotten. */
  relaunchExited(): string[] {
    const again = this.children.filter((c) => c.state === "exited");
    for (const c of again) {
      this.current.delete(c.name);
      this.views.delete(c.name);
      this.launch(c);
    }
    return again.map((c) => c.name);
  }

  /** Turn bit flipping on or off in every relay on a host. */
  relay(h: LabHost, on: boolean): void {
    for (const c of this.onHost(h)) if (c.role === "relay") c.proc?.stdin?.write(on ? "on\n" : "off\n");
  }

  /** Node and agent names. */
  members(): string[] {
    return this.children.filter((c) => c.role === "node" || c.role === "agent").map((c) => c.name);
  }

  /**
   * Healthy: every process runs, every node sees every other node alive, and no observer holds a
   * failure condition.
   */
  healthy(): { ok: boolean; why: string } {
    const down = this.children.filter((c) => c.state !== "running");
    if (down.length > 0) return { ok: false, why: `not running: ${down.map((c) => c.name).join(" ")}` };
    const nodes = this.children.filter((c) => c.role === "node");
    for (const n of nodes) {
      const view = this.views.get(n.name);
      if (!view) return { ok: false, why: `no view from ${n.name} yet` };
      for (const m of nodes)
        if (m !== n && view[m.name] !== "alive")
          return { ok: false, why: `${n.name} sees ${m.name} ${view[m.name] ?? "unknown"}` };
    }
    for (const [observer, cur] of this.current)
      for (const r of cur.values()) return { ok: false, why: `${observer} holds ${r.kind} of ${r.subject}` };
    return { ok: true, why: "" };
  }

  /**
   * Every process stopped (if running) and started afresh, and everything heard from them
   * forgotten; with `corruptPair`, those two hosts' nodes talk through bit-flipping relays.
   */
  async restart(corruptPair: readonly [string, string] | readonly [] = [], fencing = false): Promise<void> {
    await this.killAll();
    this.plan(corruptPair, fencing);
    this.seen.length = 0;
    this.fuse.length = 0;
    this.current.clear();
    this.views.clear();
    // The agents first: a node registers with its host's agent as it starts.
    for (const c of this.children) if (c.role === "agent") this.launch(c);
    for (const c of this.children) if (c.role !== "agent") this.launch(c);
  }

  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    await this.killAll();
  }

  private async killAll(): Promise<void> {
    const all = this.children.filter((c) => c.proc && c.state !== "exited");
    for (const c of all) {
      c.proc!.kill("SIGCONT");
      c.proc!.kill("SIGKILL");
    }
    await Promise.all(
      all.map((c) =>
        c.proc!.exitCode !== null || c.proc!.signalCode !== null
          ? undefined
          : new Promise<void>((r) => c.proc!.once("exit", () => r())),
      ),
    );
  }
}
