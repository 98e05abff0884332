/**
 * A pipeline of three OS processes — source → bank → audit — each a durable process with its own
 * LMDB store, joined by durable channels over TCP. While it runs, a chaos loop SIGKILLs a random
 * one every 50–500 ms and starts it again at once. At the end the bank's balances and the audit's
 * totals are read from their stores and compared with a replay of the same transfers, in order,
 * in memory: they are exact.
 *
 *   npx tsx examples/durable/pipeline.ts [--transfers 20000] [--no-chaos]
 *
 * Each process is started ahead of time and waits for its configuration on stdin (a warm spare),
 * so that a restart takes milliseconds rather than a Node start-up; the restarted process opens
 * the same store and recovers from it like any other.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { LmdbStore } from "../../src/durable/store.ts";
import { type AuditState, type BankState, expected, type SourceState } from "./bank.ts";

const ROLES = ["source", "bank", "audit"] as const;
type Role = (typeof ROLES)[number];
const NODE = fileURLToPath(new URL("./node.ts", import.meta.url));
/** Where the bundled process script goes (inside node_modules, so its packages resolve). */
const BUNDLE = fileURLToPath(
  new URL("../../node_modules/.cache/faultline/durable-node.mjs", import.meta.url),
);

/**
 * Bundle node.ts into one JavaScript file (packages stay external): Node starts it in a fraction
 * of the time a TypeScript loader needs, and a chaos loop restarts processes several times a second.
 */
async function bundle(): Promise<string> {
  const { build } = await import("esbuild");
  await build({
    entryPoints: [NODE],
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

export interface PipelineOptions {
  transfers: number;
  chaos: boolean;
  /** Pause between kills (ms), drawn uniformly. */
  killEveryMs?: [number, number];
  groupCommit?: boolean;
  log?: (line: string) => void;
  /** Give up after this long (ms). */
  timeoutMs?: number;
}

export interface PipelineResult {
  ok: boolean;
  problems: string[];
  kills: number;
  seconds: number;
  bank: BankState;
  audit: AuditState;
  source: SourceState;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

export async function runPipeline(o: PipelineOptions): Promise<PipelineResult> {
  const log = o.log ?? (() => {});
  const dir = mkdtempSync(join(tmpdir(), "faultline-pipeline-"));
  const key = randomBytes(32).toString("hex");
  const ports: Record<string, number> = {};
  for (const r of ROLES) ports[r] = await freePort();
  const all = new Set<ChildProcess>();
  const spares = new Map<Role, ChildProcess>();
  const active = new Map<Role, ChildProcess>();
  let applied = 0;
  let kills = 0;
  /** A process that ended on its own (not killed by this launcher): the run cannot finish. */
  let failed: string | undefined;
  const stopping = new Set<ChildProcess>();
  /** Signal a child this launcher started (by its PID, never by name); its exit is then expected. */
  const kill = (c: ChildProcess, signal: NodeJS.Signals) => {
    stopping.add(c);
    c.kill(signal);
  };
  const started = performance.now();
  const script = await bundle();

  const spawnSpare = (role: Role) => {
    const child = spawn(process.execPath, [script], { stdio: ["pipe", "pipe", "inherit"] });
    // A child that died on its own closes its stdin: `failed` says so, not an EPIPE crash here.
    child.stdin!.on("error", () => {});
    all.add(child);
    child.once("exit", (code, signal) => {
      all.delete(child);
      if (!stopping.has(child) && failed === undefined)
        failed = `a ${role} process (pid ${child.pid}) ended on its own (${code ?? signal}); its error is above`;
    });
    createInterface({ input: child.stdout! }).on("line", (l) => {
      try {
        const m = JSON.parse(l) as { role: Role; applied?: number };
        if (m.role === "audit" && m.applied !== undefined) applied = Math.max(applied, m.applied);
      } catch {
        log(l);
      }
    });
    spares.set(role, child);
  };
  const bringUp = (role: Role) => {
    const child = spares.get(role)!;
    spawnSpare(role);
    child.stdin!.write(
      `${JSON.stringify({ role, dir: join(dir, role), ports, key, n: o.transfers, groupCommit: o.groupCommit ?? true })}\n`,
    );
    active.set(role, child);
  };
  const exited = (c: ChildProcess) =>
    c.exitCode !== null || c.signalCode !== null
      ? Promise.resolve()
      : new Promise<void>((r) => c.once("exit", () => r()));

  // Interrupted (Ctrl-C): stop every process this launcher started before going.
  const onSignal = () => {
    for (const c of all) kill(c, "SIGKILL");
    rmSync(dir, { recursive: true, force: true });
    process.exit(130);
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  try {
    for (const r of ROLES) spawnSpare(r);
    for (const r of ROLES) bringUp(r);
    const deadline = started + (o.timeoutMs ?? 600_000);
    const [lo, hi] = o.killEveryMs ?? [50, 500];
    let lastReport = 0;
    while (applied < o.transfers) {
      if (failed !== undefined) throw new Error(`${failed}; ${applied} of ${o.transfers} applied`);
      if (performance.now() > deadline)
        throw new Error(`timed out with ${applied} of ${o.transfers} applied`);
      await new Promise((r) => setTimeout(r, o.chaos ? lo + Math.random() * (hi - lo) : 50));
      if (applied - lastReport >= 10_000 || applied >= o.transfers) {
        lastReport = applied;
        log(
          `${applied} transfers applied, ${kills} kills, ${((performance.now() - started) / 1000).toFixed(1)} s`,
        );
      }
      if (!o.chaos || applied >= o.transfers) continue;
      const role = ROLES[Math.floor(Math.random() * ROLES.length)]!;
      const victim = active.get(role)!;
      kill(victim, "SIGKILL");
      kills++;
      await exited(victim); // its port is free again
      if (failed !== undefined) continue; // reported at the top of the loop
      bringUp(role);
    }
    // Done: stop the processes in order, then read what they committed.
    for (const r of ROLES) {
      const c = active.get(r)!;
      kill(c, "SIGTERM");
      await exited(c);
    }
    const read = async <S>(role: Role): Promise<S> => {
      const s = LmdbStore.open(join(dir, role));
      const state = s.load().get("state") as S;
      await s.close();
      return state;
    };
    const bank = await read<BankState>("bank");
    const audit = await read<AuditState>("audit");
    const source = await read<SourceState>("source");
    const want = expected(o.transfers);
    const problems: string[] = [...bank.bad, ...audit.bad];
    if (source.n !== o.transfers) problems.push(`the source produced ${source.n}, not ${o.transfers}`);
    const { bad: _b, ...bankGot } = bank;
    const { bad: _a, ...auditGot } = audit;
    if (JSON.stringify(bankGot) !== JSON.stringify(want.bank))
      problems.push(`bank ${JSON.stringify(bankGot)} != expected ${JSON.stringify(want.bank)}`);
    if (JSON.stringify(auditGot) !== JSON.stringify(want.audit))
      problems.push(`audit ${JSON.stringify(auditGot)} != expected ${JSON.stringify(want.audit)}`);
    return {
      ok: problems.length === 0,
      problems,
      kills,
      seconds: (performance.now() - started) / 1000,
      bank,
      audit,
      source,
    };
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    for (const c of all) kill(c, "SIGKILL");
    await Promise.all([...all].map(exited));
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const arg = (name: string) => process.argv.indexOf(name);
  const n = arg("--transfers") > 0 ? Number(process.argv[arg("--transfers") + 1]) : 20_000;
  const r = await runPipeline({ transfers: n, chaos: arg("--no-chaos") < 0, log: (l) => console.log(l) });
  console.log(
    `${r.audit.applied} transfers, ${r.kills} processes killed, ${r.seconds.toFixed(1)} s: ` +
      `bank balances ${r.bank.balances.join(" ")} (total ${r.bank.balances.reduce((a, b) => a + b, 0)}), ` +
      `${r.audit.accepted} accepted, ${r.bank.rejected} rejected, ${r.audit.moved} moved`,
  );
  console.log(r.ok ? "exact: every transfer applied once, in order" : `WRONG:\n${r.problems.join("\n")}`);
  process.exitCode = r.ok ? 0 : 1;
}
