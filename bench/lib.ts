import { type ChildProcess, spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

export const ROOT = fileURLToPath(new URL("..", import.meta.url));

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i]!;
}

export function summarize(samples: number[]): { p50: number; p99: number; mean: number; n: number } {
  const s = [...samples].sort((a, b) => a - b);
  return {
    p50: percentile(s, 50),
    p99: percentile(s, 99),
    mean: s.reduce((a, b) => a + b, 0) / s.length,
    n: s.length,
  };
}

/** Print rows as an aligned Markdown table (so it can be pasted into docs/BENCHMARKS.md). */
export function table(headers: string[], rows: (string | number)[][]): string {
  const cells = [headers, ...rows.map((r) => r.map(String))];
  const w = headers.map((_, i) => Math.max(...cells.map((r) => r[i]!.length)));
  const line = (r: string[]) => `| ${r.map((c, i) => c.padEnd(w[i]!)).join(" | ")} |`;
  return [line(headers), `|${w.map((n) => "-".repeat(n + 2)).join("|")}|`, ...cells.slice(1).map(line)].join(
    "\n",
  );
}

export const fmt = (n: number, d = 1) => (Number.isFinite(n) ? n.toFixed(d) : "n/a");

/** Start a bench helper process (tsx), wait for its first stdout line (JSON). Killed by PID later. */
export async function startHelper<T>(file: string, args: string[]): Promise<{ proc: ChildProcess; info: T }> {
  const proc = spawn(process.execPath, ["--import", "tsx", file, ...args], {
    cwd: ROOT,
    stdio: ["ignore", "pipe", "inherit"],
  });
  const line = await new Promise<string>((resolve, reject) => {
    createInterface({ input: proc.stdout! }).once("line", resolve);
    proc.once("exit", (c) => reject(new Error(`${file} exited with ${c} before it was ready`)));
  });
  return { proc, info: JSON.parse(line) as T };
}

export async function stopHelper(proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  const gone = new Promise<void>((r) => proc.once("exit", () => r()));
  proc.kill("SIGKILL");
  await gone;
}

/** The sink acknowledges every this many messages (throughput runs). */
export const ACK_EVERY = 64;

/**
 * The raw baseline's framing: (u32 BE length, bytes)*. Feed socket chunks; `onFrame` gets the
 * whole buffer, the frame's offset and its body length (the first body byte is the message kind).
 */
export function rawFrames(onFrame: (buf: Buffer, off: number, len: number) => void): (chunk: Buffer) => void {
  let buf: Buffer = Buffer.alloc(0);
  return (chunk) => {
    buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
    let off = 0;
    while (buf.length - off >= 4) {
      const len = buf.readUInt32BE(off);
      if (buf.length - off < 4 + len) break;
      onFrame(buf, off, len);
      off += 4 + len;
    }
    buf = buf.subarray(off);
  };
}
