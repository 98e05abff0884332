import { type ChildProcess, fork } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import type { Command } from "commander";
import { z } from "zod";
import { describeFuseReason, type GroupId } from "../fuse/messages.ts";
import { type Address, formatAddress, type NodeId } from "../net/transport.ts";
import type { ToNode, ToSupervisor } from "./ipc.ts";
import { duration, intString, validate } from "./options.ts";
import { type CoordStatus, coordArgs, coordLines, coordPeers, freePorts } from "./up-coord.ts";
import { type ChildView, renderTable } from "./up-view.ts";

const UpOptions = z.object({
  nodes: intString(2, 50),
  coord: z
    .enum(["0", "1", "3", "5"], { message: "--coord takes 0 (none), 1, 3 or 5 members" })
    .transform(Number),
  interval: duration,
  duration: duration.optional(),
  tty: z.boolean(),
});

interface Child extends ChildView {
  proc: ChildProcess | undefined;
}

/** A process not started yet. */
function newChild(id: string): Child {
  return {
    id,
    pid: undefined,
    address: undefined,
    state: "starting",
    peers: undefined,
    reportedAt: undefined,
    proc: undefined,
  };
}

export function registerUp(program: Command): void {
  program
    .command("up")
    .description("run a local cluster of faultline nodes as separate processes, watch it, and break it")
    .option("--nodes <n>", "number of node processes", "5")
    .option("--coord <n>", "coordination members (etcd's v3 API; 0: none)", "3")
    .option("--interval <time>", "ping interval of each node", "250ms")
    .option("--duration <time>", "stop by itself after this long (default: until q or Ctrl-C)")
    .option("--no-tty", "plain line output and line commands, even on a terminal")
    .action(async (raw) => {
      const o = validate(UpOptions, raw, "up options");
      await new Supervisor(
        o.nodes,
        o.interval,
        o.tty && Boolean(process.stdout.isTTY && process.stdin.isTTY),
        o.coord,
      ).run(o.duration);
    });
}

/** Starts node processes, relays their views, applies the user's faults, and cleans up every PID it started. */
class Supervisor {
  private readonly key = randomBytes(32).toString("hex");
  private readonly children: Child[];
  /** The host agent all node processes register with (this machine is one host). */
  private readonly agent: Child;
  /** The coordination service's members (c1..cN), each its own process. */
  private readonly coords: Child[];
  private readonly coordStatus = new Map<NodeId, CoordStatus>();
  private coordLeader: string | undefined;
  private coordPeerList = "";
  private readonly dir = mkdtempSync(join(tmpdir(), "faultline-up-"));
  private readonly events: string[] = [];
  private readonly t0 = performance.now();
  private selected = 0;
  private readonly lastConnection = new Map<string, string>();
  /** FUSE groups made in this session, and which members were told that each failed. */
  private readonly groups = new Map<GroupId, { members: NodeId[]; told: Map<NodeId, string> }>();
  private demoGroup = false;
  private input: ReturnType<typeof createInterface> | undefined;
  private stopping: Promise<void> | undefined;
  private done!: () => void;

  constructor(
    n: number,
    private readonly intervalMs: number,
    private readonly interactive: boolean,
    coordCount = 0,
  ) {
    this.coords = Array.from({ length: coordCount }, (_, i) => newChild(`c${i + 1}`));
    this.children = Array.from({ length: n }, (_, i) => newChild(`n${i + 1}`));
    this.agent = newChild("agent:local");
  }

  /** Every process this supervisor runs: the agent, the nodes and the coordination members. */
  private all(): Child[] {
    return [this.agent, ...this.children, ...this.coords];
  }

  /** What the digit keys select: the nodes, then the coordination members. */
  private selectable(): Child[] {
    return [...this.children, ...this.coords];
  }

  async run(durationMs: number | undefined): Promise<void> {
    const finished = new Promise<void>((r) => {
      this.done = r;
    });
    process.on("SIGINT", () => void this.stop("interrupted"));
    process.on("SIGTERM", () => void this.stop("terminated"));
    // Last resort: if this process exits for any reason, no child outlives it.
    process.on("exit", () => {
      for (const c of this.all()) if (c.proc && c.state !== "dead") c.proc.kill("SIGKILL");
      rmSync(this.dir, { recursive: true, force: true });
    });
    if (this.coords.length) {
      const ports = await freePorts(2 * this.coords.length);
      const ids = this.coords.map((c) => c.id);
      this.coordPeerList = coordPeers(ids, ports.slice(0, ids.length), ports.slice(ids.length));
    }
    this.log(
      `starting a host agent, ${this.children.length} nodes${this.coords.length ? ` and ${this.coords.length} coordination members` : ""} on 127.0.0.1`,
    );
    for (const c of this.all()) this.spawn(c, 0);
    const render = setInterval(() => this.render(), this.interactive ? 250 : 2000);
    this.listenInput();
    const timer =
      durationMs === undefined ? undefined : setTimeout(() => void this.stop("duration reached"), durationMs);
    await finished;
    clearInterval(render);
    if (timer) clearTimeout(timer);
  }

  private elapsed(): string {
    return `+${((performance.now() - this.t0) / 1000).toFixed(3)}s`;
  }

  private log(line: string): void {
    const entry = `[${this.elapsed()}] ${line}`;
    this.events.push(entry);
    if (this.events.length > 14) this.events.shift();
    if (!this.interactive) console.log(entry);
  }

  private peerTable(withCoords: boolean): Record<NodeId, Address> {
    const out: Record<NodeId, Address> = {};
    for (const c of withCoords ? this.all() : [this.agent, ...this.children])
      if (c.address) out[c.id] = c.address;
    return out;
  }

  private spawn(c: Child, port: number): void {
    const script = process.argv[1]!;
    const socket = join(this.dir, "agent.sock");
    // Faster than memberlist's LAN defaults so that a demo shows SWIM verdicts within seconds.
    const swim = ["--probe-interval", "200ms", "--probe-timeout", "100ms", "--suspicion-mult", "3"];
    const args = this.coords.includes(c)
      ? coordArgs(c.id, this.coordPeerList, this.dir, socket, this.agent.id)
      : c === this.agent
        ? [
            "agent",
            "--host",
            "local",
            "--socket",
            socket,
            "--port",
            String(port),
            "--log-level",
            "error",
            ...swim,
          ]
        : [
            ...["node", "--id", c.id, "--port", String(port), "--interval", `${this.intervalMs}ms`],
            ...["--agent-socket", socket, "--agent-id", this.agent.id, "--admin-port", "0"],
            ...["--log-level", "error", ...swim],
          ];
    const proc = fork(script, args, {
      env: { ...process.env, FAULTLINE_CLUSTER_KEY: this.key },
      stdio: ["ignore", "ignore", "inherit", "ipc"],
    });
    c.proc = proc;
    c.pid = proc.pid;
    c.state = "starting";
    c.peers = undefined;
    proc.on("message", (m: ToSupervisor) => this.onMessage(c, m));
    proc.on("exit", (code, signal) => {
      if (c.proc !== proc) return;
      c.state = "dead";
      c.peers = undefined;
      this.log(`${c.id} (pid ${proc.pid}) exited: ${signal ? `signal ${signal}` : `code ${code}`}`);
      if (this.stopping && this.all().every((x) => x.state === "dead")) this.done();
    });
  }

  private onMessage(c: Child, m: ToSupervisor): void {
    switch (m.type) {
      case "listening": {
        c.address = m.address;
        c.state = "running";
        this.log(
          `${c.id} listening on ${formatAddress(m.address)} (pid ${c.pid}, boot ${m.boot.slice(0, 6)})`,
        );
        if (this.all().every((x) => x.address)) {
          // Nodes ping one another; the agent also joins the coordination members, so that its
          // certain reports reach them.
          const table: ToNode = { type: "peers", peers: this.peerTable(false) };
          const full: ToNode = { type: "peers", peers: this.peerTable(true) };
          for (const x of [this.agent, ...this.children])
            if (x.proc?.connected) x.proc.send(x === this.agent ? full : table);
          // Once membership has formed, one FUSE group of every node, to break and watch.
          if (!this.demoGroup) {
            this.demoGroup = true;
            const t = setTimeout(() => {
              const first = this.children[0];
              const running = this.children.filter((x) => x.state === "running").map((x) => x.id);
              if (first && !this.stopping && running.length >= 2) this.createGroup(first, running);
            }, 3000);
            t.unref();
          }
        }
        break;
      }
      case "coord-status": {
        const { type: _t, id: _i, ...s } = m;
        this.coordStatus.set(c.id, { ...s, at: performance.now() });
        if (m.role === "leader" && this.coordLeader !== `${c.id}/${m.term}` && !this.stopping) {
          this.coordLeader = `${c.id}/${m.term}`;
          this.log(`coordination leader: ${c.id} (term ${m.term})`);
        }
        break;
      }
      case "admin":
        this.log(`${c.id} admin endpoint 127.0.0.1:${m.port}: faultline status --admin 127.0.0.1:${m.port}`);
        break;
      case "status":
        c.peers = m.peers;
        c.reportedAt = performance.now();
        break;
      case "report": {
        const r = m.report;
        if (this.stopping) break;
        if (r.type === "failure") {
          this.log(
            `${c.id} REPORTS ${r.subject}: ${r.kind} (${r.certainty}) [${r.evidence.map((e) => e.what).join(", ")}]`,
          );
        } else {
          this.log(`${c.id} reports ${r.subject} recovered from ${r.kind}`);
        }
        break;
      }
      case "fuse-created":
        this.groups.set(m.group, { members: m.members, told: new Map() });
        this.log(`${c.id} created FUSE group ${shortGroup(m.group)} of ${m.members.join(" ")}`);
        break;
      case "fuse-create-failed":
        this.log(`${c.id} could not create a FUSE group: ${m.detail}`);
        break;
      case "fuse-failed": {
        const why = describeFuseReason(m.reason);
        this.groups.get(m.group)?.told.set(c.id, why);
        if (!this.stopping) this.log(`${c.id} told: FUSE group ${shortGroup(m.group)} FAILED: ${why}`);
        break;
      }
      case "connection": {
        // Log changes only: a dead peer's every refused redial would bury the reports.
        const key = `${c.id}>${m.event.peer}`;
        if (this.stopping === undefined && this.lastConnection.get(key) !== m.event.kind) {
          this.lastConnection.set(key, m.event.kind);
          this.log(
            `${c.id} sees ${m.event.peer}: ${m.event.kind}${m.event.code ? ` (${m.event.code})` : ""}`,
          );
        }
        break;
      }
    }
  }

  // ---- faults the user applies -------------------------------------------------------------

  private find(id: string): Child | undefined {
    return this.selectable().find((c) => c.id === id);
  }

  kill(c: Child): void {
    if (!c.proc || c.state === "dead") {
      this.log(`${c.id} is not running`);
      return;
    }
    this.log(`you: SIGKILL ${c.id} (pid ${c.pid})`);
    c.proc.kill("SIGKILL");
  }

  togglePause(c: Child): void {
    if (!c.proc || c.state === "dead") {
      this.log(`${c.id} is not running`);
      return;
    }
    if (c.state === "paused") {
      c.proc.kill("SIGCONT");
      c.state = "running";
      this.log(`you: SIGCONT ${c.id} (pid ${c.pid})`);
    } else {
      c.proc.kill("SIGSTOP");
      c.state = "paused";
      this.log(`you: SIGSTOP ${c.id} (pid ${c.pid}): alive but silent`);
    }
  }

  restart(c: Child): void {
    if (c.state !== "dead") {
      this.log(`${c.id} is still running: kill it first`);
      return;
    }
    this.log(`you: restart ${c.id}`);
    this.spawn(c, c.address && "port" in c.address ? c.address.port : 0);
  }

  /** Ask `c` to create a FUSE group of `members` (it adds itself). */
  private createGroup(c: Child, members: NodeId[]): void {
    if (!this.children.includes(c)) {
      this.log(`${c.id} is a coordination member, not a node: FUSE groups are made by nodes`);
      return;
    }
    if (!c.proc?.connected || c.state !== "running") {
      this.log(`${c.id} is not running`);
      return;
    }
    this.log(`you: ${c.id}, create a FUSE group of ${members.join(" ")}`);
    c.proc.send({ type: "fuse-create", members } satisfies ToNode);
  }

  /** Ask `c` to signal (fail) every FUSE group it belongs to. */
  private signalGroups(c: Child): void {
    if (!this.children.includes(c)) {
      this.log(`${c.id} is a coordination member, not a node: it has no FUSE groups`);
      return;
    }
    if (!c.proc?.connected || c.state !== "running") {
      this.log(`${c.id} is not running`);
      return;
    }
    this.log(`you: ${c.id}, signal your FUSE groups`);
    c.proc.send({ type: "fuse-signal" } satisfies ToNode);
  }

  /** Three running nodes, `c` first. */
  private trio(c: Child): NodeId[] {
    const others = this.children.filter((x) => x !== c && x.state === "running").map((x) => x.id);
    return [c.id, ...others.sort(() => Math.random() - 0.5).slice(0, 2)];
  }

  private command(line: string): void {
    const [verb, id] = line.trim().split(/\s+/);
    if (!verb) return;
    if (verb === "quit" || verb === "q") return void this.stop("quit");
    const c = id ? this.find(id) : undefined;
    if (!c) {
      this.log(
        `commands: kill|pause|resume|restart|group|signal <node>, quit (nodes: ${this.selectable()
          .map((x) => x.id)
          .join(" ")})`,
      );
      return;
    }
    if (verb === "kill") this.kill(c);
    else if (verb === "pause" && c.state !== "paused") this.togglePause(c);
    else if (verb === "resume" && c.state === "paused") this.togglePause(c);
    else if (verb === "restart") this.restart(c);
    else if (verb === "group") this.createGroup(c, this.trio(c));
    else if (verb === "signal") this.signalGroups(c);
    else this.log(`cannot ${verb} ${c.id} (state ${c.state})`);
  }

  private listenInput(): void {
    if (this.interactive) {
      process.stdin.setRawMode(true);
      process.stdin.resume();
      process.stdin.on("data", (buf: Buffer) => {
        const k = buf.toString();
        const c = this.selectable()[this.selected]!;
        if (k === "\u0003" || k === "q") void this.stop("quit");
        else if (/^[1-9]$/.test(k) && Number(k) <= this.selectable().length) this.selected = Number(k) - 1;
        else if (k === "k") this.kill(c);
        else if (k === "p") this.togglePause(c);
        else if (k === "r") this.restart(c);
        else if (k === "g") this.createGroup(c, this.trio(c));
        else if (k === "s") this.signalGroups(c);
        this.render();
      });
    } else if (!process.stdin.isTTY) {
      this.input = createInterface({ input: process.stdin });
      this.input.on("line", (line) => this.command(line));
    }
  }

  private render(): void {
    if (this.stopping) return;
    const table = renderTable(
      this.children,
      this.intervalMs,
      this.interactive ? this.selectable()[this.selected]?.id : undefined,
    );
    const coord = coordLines(
      this.coords.map((c) => c.id),
      new Map(this.coords.map((c) => [c.id, c.state])),
      this.coordStatus,
      performance.now(),
    );
    if (!this.interactive) {
      console.log(`[${this.elapsed()}] view (row sees column: RTT, or what is wrong):`);
      for (const l of table) console.log(`    ${l}`);
      if (coord.length)
        console.log(`[${this.elapsed()}] coordination:\n${coord.map((l) => `  ${l}`).join("\n")}`);
      return;
    }
    const out = [
      `faultline up: a host agent and ${this.children.length} node processes on 127.0.0.1   ${this.elapsed()}`,
      "",
      ...table,
      "",
      "FUSE groups:",
      ...this.groupLines(),
      ...(coord.length
        ? [
            "",
            "coordination service (etcd v3 API; a leader's exit is a certain report, failover in ms):",
            ...coord,
          ]
        : []),
      "",
      "recent events:",
      ...this.events.map((e) => `  ${e}`),
      "",
      "keys: 1-9 select node · k kill (SIGKILL) · p pause/resume (SIGSTOP/SIGCONT) · r restart · g new FUSE group · s signal its groups · q quit",
    ];
    process.stdout.write(`\u001b[2J\u001b[H${out.join("\n")}\n`);
  }

  /** The last few groups: live, or failed with why and who has been told. */
  private groupLines(): string[] {
    const lines = [...this.groups].slice(-5).map(([g, r]) => {
      const whys = [...new Set(r.told.values())];
      const state =
        r.told.size === 0
          ? "live"
          : `FAILED: ${whys.join("; ")} (told: ${[...r.told.keys()].sort().join(" ")})`;
      return `  ${shortGroup(g)} [${r.members.join(" ")}] ${state}`;
    });
    return lines.length > 0 ? lines : ["  (none yet)"];
  }

  stop(why: string): Promise<void> {
    this.stopping ??= this.shutdown(why);
    return this.stopping;
  }

  private async shutdown(why: string): Promise<void> {
    if (this.interactive) process.stdin.setRawMode(false);
    this.input?.close();
    process.stdin.destroy();
    this.log(`stopping (${why})`);
    const alive = this.all().filter((c) => c.proc && c.state !== "dead");
    for (const c of alive) {
      if (c.state === "paused") c.proc!.kill("SIGCONT");
      c.proc!.kill("SIGTERM");
    }
    const force = setTimeout(() => {
      for (const c of this.all()) if (c.proc && c.state !== "dead") c.proc.kill("SIGKILL");
    }, 3000);
    if (alive.length === 0 || this.all().every((x) => x.state === "dead")) this.done();
    await new Promise<void>((r) => {
      const check = setInterval(() => {
        if (this.all().every((x) => x.state === "dead")) {
          clearInterval(check);
          r();
        }
      }, 20);
    });
    clearTimeout(force);
    console.log(
      `[${this.elapsed()}] all ${this.children.length} node processes stopped${this.coords.length ? ` (and ${this.coords.length} coordination members)` : ""}`,
    );
    this.done();
  }
}

/** A group id as people read it: its creator and number. */
function shortGroup(g: GroupId): string {
  const [root, , n] = g.split("/");
  return `${root}#${n}`;
}
