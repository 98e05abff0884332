import type { NodeId } from "../net/transport.ts";
import type { Update } from "./messages.ts";

/**
 * Facts waiting to be piggybacked. One entry per subject (a newer fact replaces an older one);
 * each is sent `limit` times, least-sent first, then dropped — SWIM's infection-style dissemination.
 * Membership updates are keyed by member; reachability rows by their owner.
 */
export class GossipQueue<T = Update> {
  private readonly entries = new Map<NodeId, { u: T; sent: number; order: number }>();
  private order = 0;

  constructor(private readonly key: (u: T) => NodeId = (u) => (u as Update).id) {}

  get size(): number {
    return this.entries.size;
  }

  push(u: T): void {
    this.entries.set(this.key(u), { u, sent: 0, order: this.order++ });
  }

  /** Take up to `max` facts to piggyback, counting a transmission for each. */
  take(max: number, limit: number): T[] {
    if (this.entries.size === 0 || max <= 0) return [];
    const picked = [...this.entries.values()]
      .sort((a, b) => a.sent - b.sent || b.order - a.order)
      .slice(0, max);
    for (const e of picked) {
      e.sent++;
      if (e.sent >= limit) this.entries.delete(this.key(e.u));
    }
    return picked.map((e) => e.u);
  }
}
