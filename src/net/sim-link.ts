/**
 * What a simulated directed link does to the frames that cross it. Defaults: a clean 0.1 ms link.
 */
export interface LinkConditions {
  /** One-way propagation delay (ms). */
  delayMs: number;
  /** Uniform extra delay in [0, jitterMs); FIFO order is kept unless `reorder` lets a frame overtake. */
  jitterMs: number;
  /** Probability a frame is lost. */
  loss: number;
  /** Probability a frame is delivered twice. */
  duplicate: number;
  /** Probability a frame is held back up to `reorderWindowMs` and may be overtaken. */
  reorder: number;
  reorderWindowMs: number;
  /** Probability a frame has 1-3 bits flipped (the frame check must catch it). */
  corrupt: number;
  /** Bottleneck rate in bytes/s (Infinity: none). Frames queue behind it; RTT grows with load. */
  bandwidth: number;
  /** Bytes the bottleneck queue holds; a frame that does not fit is dropped (tail drop). */
  queueBytes: number;
}

export const DEFAULT_LINK: LinkConditions = {
  delayMs: 0.1,
  jitterMs: 0,
  loss: 0,
  duplicate: 0,
  reorder: 0,
  reorderWindowMs: 5,
  corrupt: 0,
  bandwidth: Number.POSITIVE_INFINITY,
  queueBytes: 64 * 1024,
};

/** Mutable per-link state: the bottleneck's busy time and the FIFO floor. */
export interface LinkState {
  busyUntil: number;
  lastArrival: number;
}

export type LinkFate =
  | { kind: "drop"; reason: "loss" | "queue-overflow" }
  | { kind: "deliver"; at: number[]; corrupt: boolean };

export interface LinkRandom {
  float(): number;
  range(lo: number, hi: number): number;
  chance(p: number): boolean;
}

/**
 * Decide what happens to a frame of `size` bytes sent at `now` over a link: dropped, or delivered at
 * one (or, duplicated, two) times. Pure apart from the link state it advances.
 */
export function routeFrame(
  c: LinkConditions,
  s: LinkState,
  now: number,
  size: number,
  rng: LinkRandom,
): LinkFate {
  if (rng.chance(c.loss)) return { kind: "drop", reason: "loss" };
  let departs = now;
  if (Number.isFinite(c.bandwidth)) {
    const backlogBytes = (Math.max(0, s.busyUntil - now) * c.bandwidth) / 1000;
    if (backlogBytes + size > c.queueBytes) return { kind: "drop", reason: "queue-overflow" };
    departs = Math.max(now, s.busyUntil) + (size * 1000) / c.bandwidth;
    s.busyUntil = departs;
  }
  const at: number[] = [];
  const copies = rng.chance(c.duplicate) ? 2 : 1;
  for (let i = 0; i < copies; i++) {
    let t = departs + c.delayMs + (c.jitterMs > 0 ? rng.range(0, c.jitterMs) : 0);
    if (rng.chance(c.reorder)) {
      t += rng.range(0, c.reorderWindowMs);
    } else {
      t = Math.max(t, s.lastArrival);
      s.lastArrival = t;
    }
    at.push(t);
  }
  return { kind: "deliver", at, corrupt: rng.chance(c.corrupt) };
}
