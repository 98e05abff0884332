import { readFileSync } from "node:fs";

/**
 * What identifies a running process beyond its pid: its start time (field 22 of /proc/PID/stat, in
 * clock ticks since boot), so that a recycled pid is never mistaken for the process we registered.
 */
export interface ProcIdentity {
  pid: number;
  /** undefined where /proc is not available (then only the pid is checked). */
  startTime: string | undefined;
}

function stat(pid: number): { state: string; startTime: string } | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return undefined;
  }
  // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ')'.
  const rest = text.slice(text.lastIndexOf(")") + 2).split(" ");
  const state = rest[0];
  const startTime = rest[19];
  if (state === undefined || startTime === undefined) return undefined;
  return { state, startTime };
}

const hasProc = (() => {
  try {
    readFileSync("/proc/self/stat", "utf8");
    return true;
  } catch {
    return false;
  }
})();

/** The identity of a live process, or undefined if `pid` is not running. */
export function procIdentity(pid: number): ProcIdentity | undefined {
  if (!Number.isSafeInteger(pid) || pid <= 0) return undefined;
  if (hasProc) {
    const s = stat(pid);
    if (!s || s.state === "Z" || s.state === "X") return undefined;
    return { pid, startTime: s.startTime };
  }
  try {
    process.kill(pid, 0);
    return { pid, startTime: undefined };
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM" ? { pid, startTime: undefined } : undefined;
  }
}

/**
 * Whether the process is gone for good: no such pid, a zombie (it has exited; only its parent's
 * wait is missing), or the pid now belongs to another process.
 */
export function procGone(id: ProcIdentity): boolean {
  const now = procIdentity(id.pid);
  if (!now) return true;
  return id.startTime !== undefined && now.startTime !== id.startTime;
}
