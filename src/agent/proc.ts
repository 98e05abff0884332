import { readdirSync, readFileSync } from "node:fs";

/**
 * What identifies a running process beyond its pid: its start time (field 22 of /proc/PID/stat, in
 * clock ticks since boot), so that a recycled pid is never mistaken for the process we registered.
 */
export interface ProcIdentity {
  pid: number;
  /** undefined where /proc is not available (then only the pid is checked). */
  startTime: string | undefined;
}

/** "gone": no such process. "unknown": /proc could not be read for another reason (never "gone"). */
type Stat = { state: string; startTime: string } | "gone" | "unknown";

function stat(pid: number): Stat {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    return code === "ENOENT" || code === "ESRCH" ? "gone" : "unknown";
  }
  // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ')'.
  const rest = text.slice(text.lastIndexOf(")") + 2).split(" ");
  const state = rest[0];
  const startTime = rest[19];
  if (state === undefined || startTime === undefined) return "unknown";
  return { state, startTime };
}

/** A zombie thread-group leader whose other threads still run is a live process. */
function otherThreadsRun(pid: number): boolean {
  try {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      if (Number(tid) === pid) continue;
      const t = stat(Number(tid));
      if (typeof t === "object" && t.state !== "Z" && t.state !== "X") return true;
    }
  } catch {
    return false;
  }
  return false;
}

const hasProc = (() => {
  try {
    readFileSync("/proc/self/stat", "utf8");
    return true;
  } catch {
    return false;
  }
})();

/** The identity of a live process, or undefined if `pid` is not running (or cannot be read). */
export function procIdentity(pid: number): ProcIdentity | undefined {
  if (!Number.isSafeInteger(pid) || pid <= 0) return undefined;
  if (hasProc) {
    const s = stat(pid);
    if (typeof s !== "object") return undefined;
    if ((s.state === "Z" || s.state === "X") && !otherThreadsRun(pid)) return undefined;
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
 * Whether the process is gone for good: no such pid, an exited zombie (only its parent's wait is
 * missing), or the pid now belongs to another process. Anything short of proof — /proc unreadable
 * for another reason (EMFILE, EACCES, ...) — is not "gone": a certain report must never be wrong.
 * Registered processes must share the agent's pid namespace (the pid they give is looked up in it).
 */
export function procGone(id: ProcIdentity): boolean {
  if (!hasProc) {
    try {
      process.kill(id.pid, 0);
      return false;
    } catch (e) {
      return (e as NodeJS.ErrnoException).code === "ESRCH";
    }
  }
  const s = stat(id.pid);
  if (s === "gone") return true;
  if (s === "unknown") return false;
  if (id.startTime !== undefined && s.startTime !== id.startTime) return true;
  return (s.state === "Z" || s.state === "X") && !otherThreadsRun(id.pid);
}
