import type { NodeId } from "../net/transport.ts";
import type { Update } from "./messages.ts";

/**
 * Updates waiting to be piggybacked. One entry per member (a newer fact replaces an older one);
 * each is sent `limit` times, least-sent first, then dropped — SWIM's infection-style dissemination.
 */
export class GossipQueue {
  private readonly entries = new Map<NodeId, { u: Update; sent: number; order: number }>();
  private order = 0;

  get size(): number {
    return this.entries.size;
  }

  push(u: Update): void {
    this.entries.set(u.id, { u, sent: 0, order: this.order++ });
  }

  /** Take up to `max` updates to piggyback, counting a transmission for each. */
  take(max: number, limit: number): Update[] {
    if (this.entries.size === 0 || max <= 0) return [];
    const picked = [...this.entries.values()]
      .sort((a, b) => a.sent - b.sent || b.order - a.order)
      .slice(0, max);
    for (const e of picked) {
      e.sent++;
      if (e.sent >= limit) this.entries.delete(e.u.id);
    }
    return picked.map((e) => e.u);
  }
}
