export type OverflowPolicy = "drop-oldest" | "drop-newest";

/**
 * A bounded FIFO of encoded messages for one peer. Bounded by count and by bytes; when full, the
 * policy decides which message goes: the oldest (fresh probes matter more than stale ones: the
 * default) or the new one. Returns how many messages were dropped so the caller can count them.
 */
export class SendQueue {
  private items: Buffer[] = [];
  private head = 0;
  private bytesQueued = 0;

  constructor(
    private readonly maxMessages: number,
    private readonly maxBytes: number,
    private readonly policy: OverflowPolicy,
  ) {}

  get length(): number {
    return this.items.length - this.head;
  }

  get bytes(): number {
    return this.bytesQueued;
  }

  /** Enqueue; returns the number of messages dropped to make room (the new one included, under drop-newest). */
  push(item: Buffer): number {
    if (item.length > this.maxBytes) return 1;
    let dropped = 0;
    while (this.length >= this.maxMessages || this.bytesQueued + item.length > this.maxBytes) {
      if (this.policy === "drop-newest") return 1;
      this.shift();
      dropped++;
    }
    this.items.push(item);
    this.bytesQueued += item.length;
    return dropped;
  }

  /** Take messages from the front up to `maxBytes` of batch payload, each message with its 4-byte
   *  length (always at least one if any). */
  take(maxBytes: number): Buffer[] {
    const out: Buffer[] = [];
    let total = 0;
    while (this.length > 0) {
      const next = this.items[this.head]!;
      // A batch entry is the message and its 4-byte length.
      if (out.length > 0 && total + 4 + next.length > maxBytes) break;
      out.push(next);
      total += 4 + next.length;
      this.shift();
    }
    return out;
  }

  clear(): number {
    const n = this.length;
    this.items = [];
    this.head = 0;
    this.bytesQueued = 0;
    return n;
  }

  private shift(): void {
    const item = this.items[this.head]!;
    this.items[this.head] = undefined as unknown as Buffer;
    this.head++;
    this.bytesQueued -= item.length;
    if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
  }
}
