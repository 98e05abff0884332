import type { Clock, Timer } from "./clock.ts";
import { Heap } from "./heap.ts";

/** Virtual wall time starts here so that simulated traces do not depend on the day they ran. */
export const VIRTUAL_EPOCH_MS = Date.UTC(2026, 0, 1);

interface Entry {
  at: number;
  seq: number;
  fn: () => void;
  cancelled: boolean;
}

/**
 * A clock that moves only when told to. Timers due at the same instant run in the order they were
 * set (ties broken by a sequence number), so a run is a pure function of its inputs.
 */
export class VirtualClock implements Clock {
  private time = 0;
  private seq = 0;
  private live = 0;
  private readonly queue = new Heap<Entry>((a, b) => a.at < b.at || (a.at === b.at && a.seq < b.seq));

  constructor(private readonly epochMs = VIRTUAL_EPOCH_MS) {}

  now(): number {
    return this.time;
  }

  wallNow(): number {
    return this.epochMs + this.time;
  }

  setTimer(delayMs: number, fn: () => void): Timer {
    const entry: Entry = { at: this.time + Math.max(0, delayMs), seq: this.seq++, fn, cancelled: false };
    this.queue.push(entry);
    this.live++;
    return {
      cancel: () => {
        if (!entry.cancelled) {
          entry.cancelled = true;
          this.live--;
        }
      },
    };
  }

  /** Number of timers set and not yet fired or cancelled. */
  get pending(): number {
    return this.live;
  }

  /** Time of the next live timer, or undefined when there is none. */
  nextAt(): number | undefined {
    this.dropCancelled();
    return this.queue.peek()?.at;
  }

  /** Run the next live timer, moving time to its due time. Returns false when no timer is left. */
  step(): boolean {
    this.dropCancelled();
    const e = this.queue.pop();
    if (!e) return false;
    this.time = e.at;
    e.cancelled = true;
    this.live--;
    e.fn();
    return true;
  }

  /** Run every timer due at or before `t`, then set time to `t`. */
  advanceTo(t: number): void {
    for (;;) {
      const next = this.nextAt();
      if (next === undefined || next > t) break;
      this.step();
    }
    if (t > this.time) this.time = t;
  }

  advance(ms: number): void {
    this.advanceTo(this.time + ms);
  }

  private dropCancelled(): void {
    for (;;) {
      const top = this.queue.peek();
      if (!top?.cancelled) return;
      this.queue.pop();
    }
  }
}
