import { type ChildProcess, fork } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import type { Command } from "commander";
import { z } from "zod";
import { type Address, formatAddress, type NodeId } from "../net/transport.ts";
import type { ToNode, ToSupervisor } from "./ipc.ts";
import { duration, intString, validate } from "./options.ts";
import { type ChildView, renderTable } from "./up-view.ts";

const UpOptions = z.object({
  nodes: intString(2, 50),
  interval: duration,
  duration: duration.optional(),
  tty: z.boolean(),
});

interface Child extends ChildView {
  proc: ChildProcess | undefined;
}

export function registerUp(program: Command): void {
  program
    .command("up")
    .description("run a local cluster of faultline nodes as separate processes, watch it, and break it")
    .option("--nodes <n>", "number of node processes", "5")
    .option("--interval <time>", "ping interval of each node", "250ms")
    .option("--duration <time>", "stop by itself after this long (default: until q or Ctrl-C)")
    .option("--no-tty", "plain line output and line commands, even on a terminal")
    .action(async (raw) => {
      const o = validate(UpOptions, raw, "up options");
      await new Supervisor(
        o.nodes,
        o.interval,
        o.tty && Boolean(process.stdout.isTTY && process.stdin.isTTY),
      ).run(o.duration);
    });
}

/** Starts node processes, relays their views, applies the user's faults, and cleans up every PID it started. */
class Supervisor {
  private readonly key = randomBytes(32).toString("hex");
  private readonly children: Child[];
  /** The host agent all node processes register with (this machine is one host). */
  private readonly agent: Child;
  private readonly dir = mkdtempSync(join(tmpdir(), "faultline-up-"));
  private readonly events: string[] = [];
  private readonly t0 = performance.now();
  private selected = 0;
  private readonly lastConnection = new Map<string, string>();
  private input: ReturnType<typeof createInterface> | undefined;
  private stopping: Promise<void> | undefined;
  private done!: () => void;

  constructor(
    n: number,
    private readonly intervalMs: number,
    private readonly interactive: boolean,
  ) {
    this.children = Array.from({ length: n }, (_, i) => ({
      id: `n${i + 1}`,
      pid: undefined,
      address: undefined,
      state: "starting" as const,
      peers: undefined,
      reportedAt: undefined,
      proc: undefined,
    }));
    this.agent = {
      id: "agent:local",
      pid: undefined,
      address: undefined,
      state: "starting",
      peers: undefined,
      reportedAt: undefined,
      proc: undefined,
    };
  }

  /** Every process this supervisor runs: the agent and the nodes. */
  private all(): Child[] {
    return [this.agent, ...this.children];
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
    this.log(`starting a host agent and ${this.children.length} nodes on 127.0.0.1`);
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

  private peerTable(): Record<NodeId, Address> {
    const out: Record<NodeId, Address> = {};
    for (const c of this.all()) if (c.address) out[c.id] = c.address;
    return out;
  }

  private spawn(c: Child, port: number): void {
    const script = process.argv[1]!;
    const socket = join(this.dir, "agent.sock");
    // Faster than memberlist's LAN defaults so that a demo shows SWIM verdicts within seconds.
    const swim = ["--probe-interval", "200ms", "--probe-timeout", "100ms", "--suspicion-mult", "3"];
    const args =
      c === this.agent
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
          const table: ToNode = { type: "peers", peers: this.peerTable() };
          for (const x of this.all()) if (x.proc?.connected) x.proc.send(table);
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
    return this.children.find((c) => c.id === id);
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

  private command(line: string): void {
    const [verb, id] = line.trim().split(/\s+/);
    if (!verb) return;
    if (verb === "quit" || verb === "q") return void this.stop("quit");
    const c = id ? this.find(id) : undefined;
    if (!c) {
      this.log(
        `commands: kill|pause|resume|restart <node>, quit (nodes: ${this.children.map((x) => x.id).join(" ")})`,
      );
      return;
    }
    if (verb === "kill") this.kill(c);
    else if (verb === "pause" && c.state !== "paused") this.togglePause(c);
    else if (verb === "resume" && c.state === "paused") this.togglePause(c);
    else if (verb === "restart") this.restart(c);
    else this.log(`cannot ${verb} ${c.id} (state ${c.state})`);
  }

  private listenInput(): void {
    if (this.interactive) {
      process.stdin.setRawMode(true);
      process.stdin.resume();
      process.stdin.on("data", (buf: Buffer) => {
        const k = buf.toString();
        const c = this.children[this.selected]!;
        if (k === "\u0003" || k === "q") void this.stop("quit");
        else if (/^[1-9]$/.test(k) && Number(k) <= this.children.length) this.selected = Number(k) - 1;
        else if (k === "k") this.kill(c);
        else if (k === "p") this.togglePause(c);
        else if (k === "r") this.restart(c);
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
      this.interactive ? this.children[this.selected]?.id : undefined,
    );
    if (!this.interactive) {
      console.log(`[${this.elapsed()}] view (row sees column: RTT, or what is wrong):`);
      for (const l of table) console.log(`    ${l}`);
      return;
    }
    const out = [
      `faultline up: a host agent and ${this.children.length} node processes on 127.0.0.1   ${this.elapsed()}`,
      "",
      ...table,
      "",
      "recent events:",
      ...this.events.map((e) => `  ${e}`),
      "",
      "keys: 1-9 select node · k kill (SIGKILL) · p pause/resume (SIGSTOP/SIGCONT) · r restart · q quit",
    ];
    process.stdout.write(`\u001b[2J\u001b[H${out.join("\n")}\n`);
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
    console.log(`[${this.elapsed()}] all ${this.children.length} node processes stopped`);
    this.done();
  }
}
