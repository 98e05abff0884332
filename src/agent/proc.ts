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
type Stat = { state: string; startTime: string; flags: number } | "gone" | "unknown";

/** The kernel's per-task flag "this task is in do_exit()" (include/linux/sched.h); never cleared. */
const PF_EXITING = 0x4;

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
  const flags = Number(rest[6]);
  if (state === undefined || startTime === undefined || !Number.isFinite(flags)) return "unknown";
  return { state, startTime, flags };
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
  if (s.state !== "Z" && s.state !== "X") return false;
  return groupDoomed(id, (tid) => {
    const t = stat(tid);
    return t === "gone" || (typeof t === "object" && (t.state === "Z" || t.state === "X"));
  });
}

/**
 * Whether every thread of the process passes `doomed`, by a scan that a thread created or an exec()
 * during it cannot fool: list the threads, check each, list again (a thread not in the first list
 * means one was created meanwhile: no verdict), and read the leader last — an exec() by another
 * thread gives the leader's pid and start time to the new program, which a last look sees running.
 * A thread found doomed can create no thread, so none can appear after the second list.
 */
function groupDoomed(id: ProcIdentity, doomed: (tid: number) => boolean): boolean {
  const list = (): Set<number> | undefined => {
    try {
      return new Set(readdirSync(`/proc/${id.pid}/task`).map(Number));
    } catch {
      return undefined;
    }
  };
  const first = list();
  if (!first) return stat(id.pid) === "gone";
  for (const tid of first) if (!doomed(tid)) return false;
  const second = list();
  if (second) for (const tid of second) if (!first.has(tid)) return false;
  const leader = stat(id.pid);
  if (leader === "gone") return true;
  if (leader === "unknown") return false;
  if (id.startTime !== undefined && leader.startTime !== id.startTime) return true; // another process's pid now
  return doomed(id.pid);
}

/** SIGKILL (signal 9: bit 8 of the pending masks) is pending for the task, or for its whole group. */
function killPending(tid: number): boolean {
  let text: string;
  try {
    text = readFileSync(`/proc/${tid}/status`, "utf8");
  } catch {
    return false;
  }
  const bit = (field: string) => {
    const hex = new RegExp(`^${field}:\\s*([0-9a-f]+)$`, "m").exec(text)?.[1];
    return hex !== undefined && (Number.parseInt(hex.slice(-3), 16) & 0x100) !== 0;
  };
  return bit("SigPnd") || bit("ShdPnd");
}

/**
 * Whether the process will never run its own code again: it is gone (procGone), or it is still our
 * process (same start time) and every one of its threads has exited, is in do_exit() (PF_EXITING),
 * or has SIGKILL pending. A task in do_exit() never returns to user space; a pending SIGKILL cannot
 * be blocked, caught or ignored, and is acted on before the task next reaches user space; and a
 * thread group none of whose threads will run user code again can start no new thread. This is how
 * the agent trusts an early exit notice (exit-watch.ts) before the kernel has torn the process
 * down. (A thread exec()ing while the others are killed has no SIGKILL pending: not exiting; and
 * see groupDoomed for why the scan holds while threads come and go.)
 *
 * What this does not promise: that the process's resources are released. Its sockets, ports and
 * file locks go with its memory teardown, milliseconds later; a thread in an uninterruptible
 * sleep (a hung NFS call) may hold them far longer. "Certain exit" means it will never act again.
 */
export function procExiting(id: ProcIdentity): boolean {
  if (procGone(id)) return true;
  if (!hasProc) return false;
  const leader = stat(id.pid);
  if (typeof leader !== "object" || leader.startTime !== id.startTime) return false;
  return groupDoomed(id, (tid) => {
    const s = stat(tid);
    if (s === "gone") return true;
    if (s === "unknown") return false;
    return s.state === "Z" || s.state === "X" || (s.flags & PF_EXITING) !== 0 || killPending(tid);
  });
}
