import type { Clock } from "./clock.ts";

/**
 * Lets one event per key through per interval: "log a bad frame at most once per peer per 10 s".
 * Suppressed occurrences are counted and reported with the next one let through. The number of
 * keys is bounded so that a flood of distinct keys cannot grow memory.
 */
export class RateLimiter {
  private readonly last = new Map<string, { at: number; suppressed: number }>();

  constructor(
    private readonly clock: Clock,
    private readonly intervalMs: number,
    private readonly maxKeys = 1024,
  ) {}

  /** Returns the number of suppressed occurrences since the last one let through, or -1 to suppress. */
  take(key: string): number {
    const now = this.clock.now();
    const entry = this.last.get(key);
    if (entry && now - entry.at < this.intervalMs) {
      entry.suppressed++;
      return -1;
    }
    const suppressed = entry?.suppressed ?? 0;
    if (!entry && this.last.size >= this.maxKeys) {
      const oldest = this.last.keys().next().value;
      if (oldest !== undefined) this.last.delete(oldest);
    }
    this.last.delete(key);
    this.last.set(key, { at: now, suppressed: 0 });
    return suppressed;
  }
}
