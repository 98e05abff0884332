import { type ChildProcess, execFile, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync } from "node:fs";
import { homedir, tmpdir } from "node:os";
import { basename, dirname, join } from "node:path";
import { createInterface } from "node:readline";
import type { Logger } from "pino";
import { ownedPrivate } from "../runtime/owned.ts";
import { packageRoot } from "../runtime/package-root.ts";

/**
 * The kernel's word that a process has started to die, well before its sockets close.
 *
 * A killed process's sockets close only after the kernel has torn down its memory: 5–60 ms for a
 * Node process of 60–600 MB, and that teardown is what the agent's socket evidence waits for.
 * Linux's taskstats interface reports a task's exit at the start of do_exit(), ~0.1 ms after the
 * SIGKILL. `native/exitwatch.c` listens to it for the pids the agent watches; this class builds
 * it (with the host's C compiler, once, into a cache directory), runs it, and passes its notices
 * on. It is an accelerator only: where it cannot run (not Linux, no compiler, no taskstats, no
 * CAP_NET_ADMIN) the agent relies on the socket close as before, and says so once.
 */
export class ExitWatch {
  private readonly handlers: ((pid: number, kind: "exit" | "dying") => void)[] = [];
  private stopped = false;

  private constructor(
    private readonly child: ChildProcess,
    private readonly log: Logger,
  ) {
    child.on("error", (err) => this.log.warn({ err }, "exitwatch failed"));
    child.on("exit", (code, signal) => {
      if (!this.stopped)
        this.log.warn({ code, signal }, "exitwatch stopped; process exits are seen by socket close");
    });
  }

  private onLine(line: string): void {
    // "exit P": the kernel says the group died; "dying P": one of its threads began to exit. Either
    // way the agent checks /proc before it believes anything.
    const m = /^(exit|dying) (\d+)$/.exec(line);
    if (m) {
      const pid = Number(m[2]);
      for (const h of this.handlers) {
        try {
          h(pid, m[1] as "exit" | "dying");
        } catch (err) {
          this.log.error({ err, pid }, "a process-exit notice handler failed");
        }
      }
    } else if (line === "overrun") {
      this.log.warn(
        "the kernel dropped process-exit notices (a burst of exits); socket evidence covers them",
      );
    }
  }

  /** Build and start the watcher; undefined (and why, logged once) where it cannot run. */
  static async start(log: Logger): Promise<ExitWatch | undefined> {
    if (process.platform !== "linux") return undefined;
    try {
      const bin = await build();
      const child = spawn(bin, [], { stdio: ["pipe", "pipe", "inherit"] });
      child.stdin!.on("error", () => {}); // it died: its exit handler says so
      let watcher: ExitWatch | undefined;
      let timer: NodeJS.Timeout | undefined;
      const first = await new Promise<string>((resolve, reject) => {
        child.once("error", reject);
        // "close", not "exit": its last line ("unavailable <why>") has been read by then.
        child.once("close", (code) => reject(new Error(`exitwatch exited (${code}) before it was ready`)));
        timer = setTimeout(() => reject(new Error("exitwatch did not start within 10 s")), 10_000); // real-io
        // One reader for the helper's whole life: the first line answers start(), the rest are notices.
        createInterface({ input: child.stdout! }).on("line", (line) =>
          watcher ? watcher.onLine(line) : resolve(line),
        );
      }).catch((err: Error) => {
        child.kill("SIGKILL");
        throw err;
      });
      clearTimeout(timer);
      if (first !== "ready") {
        child.kill("SIGKILL");
        throw new Error(first.replace(/^unavailable /, ""));
      }
      watcher = new ExitWatch(child, log);
      return watcher;
    } catch (err) {
      log.info(
        { why: (err as Error).message },
        "fast process-exit notices (taskstats) unavailable: exits are seen when the process's socket closes, after the kernel frees its memory",
      );
      return undefined;
    }
  }

  /** `exit`: the kernel says the whole thread group died; `dying`: one of its threads began to exit. */
  onExit(fn: (pid: number, kind: "exit" | "dying") => void): void {
    this.handlers.push(fn);
  }

  watch(pid: number): void {
    if (!this.stopped) this.child.stdin!.write(`+${pid}\n`);
  }

  unwatch(pid: number): void {
    if (!this.stopped) this.child.stdin!.write(`-${pid}\n`);
  }

  /** Stop the watcher (it also stops by itself when this process's end of its stdin closes). */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const gone = new Promise<void>((r) => this.child.once("exit", () => r()));
    this.child.stdin!.end();
    const t = setTimeout(() => this.child.kill("SIGKILL"), 1000);
    await gone;
    clearTimeout(t);
  }
}

/** native/exitwatch.c, found from this module whether it runs from src/agent or from a bundle. */
function sourcePath(): string {
  const root = packageRoot();
  const found = root === undefined ? undefined : join(root, "native", "exitwatch.c");
  if (!found || !existsSync(found))
    throw new Error("native/exitwatch.c is not installed beside faultline's sources");
  return found;
}

/** Where built helpers are kept: $FAULTLINE_CACHE_DIR, else ~/.cache/faultline, else the temp dir. */
function cacheDir(): string {
  const candidates = [
    process.env.FAULTLINE_CACHE_DIR,
    join(homedir(), ".cache", "faultline"),
    join(tmpdir(), `faultline-${process.getuid?.() ?? "user"}`),
  ];
  for (const dir of candidates) {
    if (!dir) continue;
    try {
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      if (ownedPrivate(dir)) return dir;
    } catch {}
  }
  throw new Error("no private cache directory to build exitwatch in (set FAULTLINE_CACHE_DIR)");
}

/** Compile exitwatch once per source version (keyed by its hash); the binary's path. */
async function build(): Promise<string> {
  const src = sourcePath();
  const hash = createHash("sha256").update(readFileSync(src)).digest("hex").slice(0, 16);
  const bin = join(cacheDir(), `exitwatch-${hash}`);
  if (existsSync(bin)) {
    if (!ownedPrivate(bin)) throw new Error(`${bin} is not ours alone (owner or mode): refusing to run it`);
    return bin;
  }
  const tmp = `${bin}.${process.pid}.tmp`;
  const cc = process.env.CC ?? "cc";
  try {
    await new Promise<void>((resolve, reject) => {
      execFile(cc, ["-O2", "-Wall", "-o", tmp, src], { timeout: 60_000 }, (err, _out, stderr) =>
        err
          ? reject(new Error(`could not compile exitwatch with ${cc}: ${stderr.trim() || err.message}`))
          : resolve(),
      );
    });
    chmodSync(tmp, 0o700);
    renameSync(tmp, bin); // atomic: a concurrent agent never runs a half-written binary
    // Builds of older sources are of no more use (a running agent keeps its open binary).
    for (const f of readdirSync(dirname(bin)))
      if (/^exitwatch-[0-9a-f]{16}$/.test(f) && f !== basename(bin))
        rmSync(join(dirname(bin), f), { force: true });
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
  return bin;
}
