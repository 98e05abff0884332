/**
 * The phi accrual failure detector (Hayashibara, Défago, Yared, Katayama; SRDS 2004): instead of a
 * yes/no verdict, a suspicion level phi = -log10(P(a heartbeat arrives later than now)), from a
 * normal distribution fitted to recent inter-arrival times. Pure: the caller supplies time.
 */
export interface PhiOptions {
  /** Inter-arrival samples kept (default 100). */
  windowSize?: number;
  /** Floor on the standard deviation, so a very regular sender does not make phi explode (ms). */
  minStdDevMs?: number;
  /** Extra pause tolerated before phi starts rising (ms). */
  acceptablePauseMs?: number;
  /** Interval assumed before enough samples exist (ms). */
  firstIntervalMs?: number;
}

export const PHI_DEFAULTS = {
  windowSize: 100,
  minStdDevMs: 50,
  acceptablePauseMs: 0,
  firstIntervalMs: 1000,
} as const;

export class PhiAccrual {
  private readonly samples: number[] = [];
  private sum = 0;
  private sumSq = 0;
  private last: number | undefined;
  private readonly o: Required<PhiOptions>;

  constructor(options: PhiOptions = {}) {
    this.o = { ...PHI_DEFAULTS, ...options };
    // Seed with the expected interval so the first heartbeats give a sane distribution.
    const f = this.o.firstIntervalMs;
    this.add(f - f / 4);
    this.add(f + f / 4);
  }

  heartbeat(now: number): void {
    if (this.last !== undefined) this.add(now - this.last);
    this.last = now;
  }

  /** Suspicion level at `now`; 0 before the first heartbeat. */
  phi(now: number): number {
    if (this.last === undefined) return 0;
    const n = this.samples.length;
    const mean = this.sum / n + this.o.acceptablePauseMs;
    const variance = Math.max(0, this.sumSq / n - (this.sum / n) ** 2);
    const sd = Math.max(Math.sqrt(variance), this.o.minStdDevMs);
    const y = (now - this.last - mean) / sd;
    // Logistic approximation of the normal CDF's tail (as Akka and Cassandra use).
    const e = Math.exp(-y * (1.5976 + 0.070566 * y * y));
    const p = now - this.last > mean ? e / (1 + e) : 1 - 1 / (1 + e);
    return -Math.log10(Math.max(p, Number.MIN_VALUE));
  }

  /** Mean inter-arrival time (ms). */
  mean(): number {
    return this.sum / this.samples.length;
  }

  private add(interval: number): void {
    this.samples.push(interval);
    this.sum += interval;
    this.sumSq += interval * interval;
    if (this.samples.length > this.o.windowSize) {
      const old = this.samples.shift()!;
      this.sum -= old;
      this.sumSq -= old * old;
    }
  }
}
