/**
 * Time is injected. Protocol code never calls Date.now(), performance.now() or setTimeout itself:
 * it receives a Clock, which is either the real one below or the VirtualClock the simulator moves.
 */
export interface Timer {
  /** Cancel the timer; idempotent, harmless after it fired. */
  cancel(): void;
}

export interface Clock {
  /** Monotonic time in milliseconds, sub-millisecond resolution. Only differences are meaningful. */
  now(): number;
  /** Wall-clock time in milliseconds since the Unix epoch (may jump; never use it to measure intervals). */
  wallNow(): number;
  /** Run `fn` once after `delayMs` (>= 0) of monotonic time. */
  setTimer(delayMs: number, fn: () => void): Timer;
}

/** The real clock: performance.now() for monotonic time, Date.now() for wall time, setTimeout for timers. */
export class RealClock implements Clock {
  now(): number {
    return performance.now(); // real-io: this is the real clock
  }
  wallNow(): number {
    return Date.now(); // real-io: this is the real clock
  }
  setTimer(delayMs: number, fn: () => void): Timer {
    if (delayMs <= 0) {
      // "At once" runs after the I/O already read in this loop iteration (setTimeout(0) would wait
      // a millisecond): what arrived together is handled together.
      const immediate = setImmediate(fn); // real-io: this is the real clock
      return { cancel: () => clearImmediate(immediate) };
    }
    const handle = setTimeout(fn, delayMs); // real-io: this is the real clock
    return { cancel: () => clearTimeout(handle) };
  }
}

export const realClock: Clock = new RealClock();

/**
 * A timer that fires this much after its time means the process did not run meanwhile (Node's
 * timers fire within a millisecond or two otherwise; in the simulator, a paused node's timers
 * fire late when it resumes).
 */
export const LATE_TIMER_MS = 10;

/**
 * `clock.setTimer` for timers that judge silence (a probe's timeout, a leader's heartbeats): when
 * it fires more than LATE_TIMER_MS late, this process was itself stopped for a while (a long GC or
 * snapshot step, a VM pause), what peers sent meanwhile may be waiting in the sockets, and Node
 * runs due timers before it reads them. Then `fn` runs after the turn's I/O (a zero timer) — and
 * again so if the process stopped once more before that, up to MAX_DEFERRALS times — so that
 * silence is judged on what actually arrived.
 */
export function setTimerAfterIo(clock: Clock, delayMs: number, fn: () => void): Timer {
  let current: Timer;
  // At most a few turns: where every turn is long (a slow disk's commits on the loop), a timer
  // put off each time would never fire.
  const fire = (due: number, deferrals: number) => () => {
    const now = clock.now();
    if (now - due > LATE_TIMER_MS && deferrals < MAX_DEFERRALS)
      current = clock.setTimer(0, fire(now, deferrals + 1));
    else fn();
  };
  current = clock.setTimer(delayMs, fire(clock.now() + Math.max(0, delayMs), 0));
  return { cancel: () => current.cancel() };
}

const MAX_DEFERRALS = 3;

/** Sleep on any clock; rejects with the signal's reason when aborted. */
export function sleep(clock: Clock, ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = () => {
      timer.cancel();
      reject(signal?.reason);
    };
    const timer = clock.setTimer(ms, () => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    });
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
