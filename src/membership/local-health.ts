/**
 * Lifeguard's local health multiplier (Dadgar, Phillips, Currey; "Lifeguard: SWIM-ing with
 * situational awareness", 2018): a node that sees signs that *it* is slow (its probes fail, the
 * relays it asks do not even send nacks, others suspect it) raises a score that stretches its own
 * probe interval and timeout, instead of accusing healthy peers.
 */
export class LocalHealth {
  private score = 0;
  constructor(private readonly max: number) {}

  /** The multiplier to apply to intervals and timeouts: 1 when healthy, up to max + 1. */
  get multiplier(): number {
    return this.score + 1;
  }

  get value(): number {
    return this.score;
  }

  /** +1: a failed probe, a missed nack, or having to refute a suspicion about ourselves. */
  worse(n = 1): void {
    this.score = Math.min(this.max, this.score + n);
  }

  /** -1: a successful probe. */
  better(): void {
    this.score = Math.max(0, this.score - 1);
  }
}

/**
 * Lifeguard's dynamic suspicion timeout: start at `max`, and shrink towards `min` as independent
 * members confirm the suspicion (logarithmically, reaching `min` after `k` confirmations).
 */
export function suspicionTimeout(min: number, max: number, k: number, confirmations: number): number {
  if (k < 1) return min;
  const frac = Math.log(confirmations + 1) / Math.log(k + 1);
  return Math.max(min, max - (max - min) * frac);
}
