import type { NodeId } from "../net/transport.ts";
import { ErrorCode, FaultlineError } from "../runtime/errors.ts";
import type { KenFrame } from "./messages.ts";

/**
 * Ken (Kelly et al., USENIX ATC 2012) as a sans-I/O state machine. A durable process handles one
 * input at a time — a **turn**: the handler changes the state and sends messages. The state, the
 * outgoing messages (numbered per destination) and the record that the input is done are written
 * in one atomic batch; only once the batch is durable do the messages leave and the input's sender
 * get its acknowledgement. So a crash at any instant loses nothing that anyone has seen, and on
 * restart the process resends what was not acknowledged: every message is applied exactly once,
 * in order per sender→receiver pair, and the guarantee composes across independent processes.
 *
 * The host (DurableProcess) feeds in frames and local inputs, runs `runTurns`, commits the batch
 * it returns, then calls `committed` and performs what that returns.
 */

export type ProcessId = NodeId;

export interface TurnContext<S> {
  readonly self: ProcessId;
  /** This turn's own copy of the state: change it, or assign a new one. */
  state: S;
  /** Send `message` to `to`; it leaves once this turn is durable, and arrives exactly once. */
  send(to: ProcessId, message: unknown): void;
  /** Run `fn` once this turn is durable (output commit): what the outside world may see. */
  output(fn: () => void): void;
}

/** Handed to `onChannelError` when a channel gives up on its peer. */
export interface ChannelError {
  code: typeof ErrorCode.ChannelGaveUp;
  peer: ProcessId;
  reason: string;
  /** The messages to the peer that were never acknowledged, oldest first. */
  undelivered: unknown[];
}

export interface DurableHandlers<S> {
  /** The state of a process that has never committed a turn. */
  initial(): S;
  onMessage?(ctx: TurnContext<S>, from: ProcessId, message: unknown): void;
  /** A local input (DurableProcess.submit): a timer, a request from outside. */
  onInput?(ctx: TurnContext<S>, input: unknown): void;
  onChannelError?(ctx: TurnContext<S>, error: ChannelError): void;
}

export interface KenOptions {
  /** Messages in flight per destination before waiting for acknowledgements. */
  window: number;
  retransmitMinMs: number;
  retransmitMaxMs: number;
}

export const KEN_DEFAULTS: KenOptions = { window: 256, retransmitMinMs: 50, retransmitMaxMs: 2000 };

export type KenOutput = { type: "send"; to: ProcessId; frame: KenFrame } | { type: "output"; fn: () => void };

type Turn =
  | { kind: "message"; from: ProcessId; seq: number; body: unknown }
  | { kind: "input"; input: unknown }
  | { kind: "channel-error"; error: ChannelError };

export interface Batch {
  writes: Map<string, unknown>;
  turns: number;
}

interface Outbound {
  /** Highest sequence number assigned (committed or in the batch being committed). */
  assigned: number;
  /** Highest committed, so allowed to leave. */
  released: number;
  acked: number;
  /** Unacknowledged messages, oldest first (committed ones, then the batch's). */
  pending: Array<{ seq: number; body: unknown }>;
  /** When to send the window again, and the current backoff. */
  due: number;
  backoff: number;
}

export interface KenStats {
  turns: number;
  failedTurns: number;
  duplicates: number;
  outOfOrder: number;
  retransmits: number;
  malformed: number;
}

// Keys in the store. `/` never ends a peer id we accept, and the sequence number is last.
const STATE = "state";
const outKey = (to: ProcessId, seq: number) => `o/${to}/${String(seq).padStart(16, "0")}`;
const nextKey = (to: ProcessId) => `n/${to}`;
const inKey = (from: ProcessId) => `i/${from}`;
const retiredKey = (peer: ProcessId) => `r/${peer}`;

/** Out-of-order messages kept per sender, at most (more are dropped: the sender resends). */
const REORDER_MAX = 1024;

export class KenCore<S> {
  readonly stats: KenStats = {
    turns: 0,
    failedTurns: 0,
    duplicates: 0,
    outOfOrder: 0,
    retransmits: 0,
    malformed: 0,
  };
  private state: S;
  private readonly out = new Map<ProcessId, Outbound>();
  private readonly inCommitted = new Map<ProcessId, number>();
  private readonly inQueued = new Map<ProcessId, number>();
  private readonly reorder = new Map<ProcessId, Map<number, unknown>>();
  private readonly retired = new Map<ProcessId, string>();
  private readonly queue: Turn[] = [];
  /** Writes waiting for the next batch (acknowledged outbox entries to delete, retirements). */
  private readonly pendingWrites = new Map<string, unknown>();
  private inflight:
    | { acks: Set<ProcessId>; inputs: Map<ProcessId, number>; outputs: Array<() => void> }
    | undefined;
  private readonly o: KenOptions;

  constructor(
    readonly self: ProcessId,
    private readonly handlers: DurableHandlers<S>,
    image: ReadonlyMap<string, unknown>,
    options: Partial<KenOptions> = {},
    /** Told of a turn whose handler threw (the turn is rolled back; its input counts as done). */
    private readonly onTurnError: (e: unknown, turn: string) => void = () => {},
  ) {
    this.o = { ...KEN_DEFAULTS, ...options };
    this.state = image.has(STATE) ? (image.get(STATE) as S) : handlers.initial();
    for (const [k, v] of image) {
      if (k.startsWith("n/")) this.outbound(k.slice(2)).assigned = v as number;
      else if (k.startsWith("i/")) this.inCommitted.set(k.slice(2), v as number);
      else if (k.startsWith("r/")) this.retired.set(k.slice(2), v as string);
    }
    for (const [k, v] of image) {
      if (!k.startsWith("o/")) continue;
      const cut = k.lastIndexOf("/");
      const ob = this.outbound(k.slice(2, cut));
      ob.pending.push({ seq: Number(k.slice(cut + 1)), body: v });
    }
    for (const ob of this.out.values()) {
      ob.pending.sort((a, b) => a.seq - b.seq);
      ob.released = ob.assigned;
      ob.acked = ob.pending.length > 0 ? ob.pending[0]!.seq - 1 : ob.assigned;
    }
    for (const [from, n] of this.inCommitted) this.inQueued.set(from, n);
  }

  /** The state as of the last turn run (committed, or in the batch being committed). */
  get current(): S {
    return this.state;
  }

  /** After a (re)start: send every destination's window of unacknowledged messages. */
  start(now: number): KenOutput[] {
    const outputs: KenOutput[] = [];
    for (const [to, ob] of this.out) this.sendWindow(now, to, ob, outputs, true);
    return outputs;
  }

  /** Queue a local input for a turn. */
  input(input: unknown): void {
    this.queue.push({ kind: "input", input });
  }

  /** Whether a batch is worth running (turns queued, or writes waiting). */
  hasWork(): boolean {
    return this.inflight === undefined && (this.queue.length > 0 || this.pendingWrites.size > 0);
  }

  /** A frame from `from` (authenticated by the transport). */
  receive(now: number, from: ProcessId, f: KenFrame): KenOutput[] {
    const outputs: KenOutput[] = [];
    if (f.t === "a") {
      const ob = this.out.get(from);
      if (!ob) return outputs;
      const upTo = Math.min(f.u, ob.released); // nobody acknowledges what never left
      if (upTo <= ob.acked) return outputs;
      // Everything up to the old window's edge has been sent already: only what the
      // acknowledgement brings into the window goes now.
      const sentUpTo = Math.min(ob.released, ob.acked + this.o.window);
      ob.acked = upTo;
      while (ob.pending.length > 0 && ob.pending[0]!.seq <= upTo) {
        this.pendingWrites.set(outKey(from, ob.pending.shift()!.seq), undefined);
      }
      ob.backoff = this.o.retransmitMinMs;
      ob.due = ob.acked >= ob.released ? Number.POSITIVE_INFINITY : now + ob.backoff;
      this.sendWindow(now, from, ob, outputs, false, sentUpTo);
      return outputs;
    }
    const queued = this.inQueued.get(from) ?? 0;
    if (f.s <= queued) {
      this.stats.duplicates++;
      const committed = this.inCommitted.get(from) ?? 0;
      // Its acknowledgement was lost (or is not due yet: then it follows the commit).
      if (f.s <= committed)
        outputs.push({ type: "send", to: from, frame: { p: "ken", t: "a", u: committed } });
      return outputs;
    }
    if (f.s > queued + 1) {
      this.stats.outOfOrder++;
      const buf = this.reorder.get(from) ?? new Map<number, unknown>();
      if (buf.size < REORDER_MAX && f.s - queued <= 4 * this.o.window) buf.set(f.s, f.b);
      this.reorder.set(from, buf);
      return outputs;
    }
    this.queue.push({ kind: "message", from, seq: f.s, body: f.b });
    let next = f.s;
    const buf = this.reorder.get(from);
    while (buf?.has(next + 1)) {
      next++;
      this.queue.push({ kind: "message", from, seq: next, body: buf.get(next) });
      buf.delete(next);
    }
    this.inQueued.set(from, next);
    return outputs;
  }

  /**
   * Give up on `peer` (an operator retired it, or its host certainly crashed): its unacknowledged
   * messages are dropped and handed to `onChannelError` in a turn; later sends to it are too.
   */
  retire(peer: ProcessId, reason: string): void {
    if (this.retired.has(peer)) return;
    this.retired.set(peer, reason);
    this.pendingWrites.set(retiredKey(peer), reason);
    const ob = this.out.get(peer);
    const undelivered: unknown[] = [];
    if (ob) {
      for (const m of ob.pending) {
        undelivered.push(m.body);
        this.pendingWrites.set(outKey(peer, m.seq), undefined);
      }
      ob.pending = [];
      ob.acked = ob.released = ob.assigned;
    }
    this.queue.push({
      kind: "channel-error",
      error: { code: ErrorCode.ChannelGaveUp, peer, reason, undelivered },
    });
  }

  isRetired(peer: ProcessId): boolean {
    return this.retired.has(peer);
  }

  /** Run up to `max` queued turns into one batch for the host to commit. */
  runTurns(max: number): Batch | undefined {
    if (!this.hasWork()) return undefined;
    const writes = new Map(this.pendingWrites);
    this.pendingWrites.clear();
    const acks = new Set<ProcessId>();
    const inputs = new Map<ProcessId, number>();
    const outputs: Array<() => void> = [];
    let turns = 0;
    while (turns < max && this.queue.length > 0) {
      const turn = this.queue.shift()!;
      turns++;
      const sends: Array<{ to: ProcessId; body: unknown }> = [];
      const outs: Array<() => void> = [];
      try {
        const ctx: TurnContext<S> = {
          self: this.self,
          state: structuredClone(this.state),
          send: (to, message) => {
            if (message === undefined) {
              // A store drops undefined values: the message would vanish from the outbox.
              throw new FaultlineError(
                ErrorCode.BadArgument,
                `send to ${to}: a message cannot be undefined (send null)`,
              );
            }
            sends.push({ to, body: message });
          },
          output: (fn) => {
            outs.push(fn);
          },
        };
        if (turn.kind === "message") this.handlers.onMessage?.(ctx, turn.from, turn.body);
        else if (turn.kind === "input") this.handlers.onInput?.(ctx, turn.input);
        else this.handlers.onChannelError?.(ctx, turn.error);
        if (ctx.state === undefined) {
          throw new FaultlineError(
            ErrorCode.BadArgument,
            "a turn left the state undefined (it cannot be stored; use null)",
          );
        }
        // What cannot be stored (a function, a socket) fails this turn, not every later one.
        this.state = structuredClone(ctx.state);
        this.stats.turns++;
        const gaveUp: unknown[] = [];
        for (const { to, body } of sends) {
          if (this.retired.has(to)) {
            gaveUp.push({ to, body });
            continue;
          }
          const ob = this.outbound(to);
          const seq = ++ob.assigned;
          ob.pending.push({ seq, body });
          writes.set(outKey(to, seq), body);
          writes.set(nextKey(to), seq);
        }
        outputs.push(...outs);
        for (const g of gaveUp as Array<{ to: ProcessId; body: unknown }>) {
          this.queue.push({
            kind: "channel-error",
            error: {
              code: ErrorCode.ChannelGaveUp,
              peer: g.to,
              reason: this.retired.get(g.to)!,
              undelivered: [g.body],
            },
          });
        }
      } catch (e) {
        this.stats.failedTurns++;
        this.onTurnError(e, turn.kind === "message" ? `message ${turn.seq} from ${turn.from}` : turn.kind);
      }
      if (turn.kind === "message") {
        writes.set(inKey(turn.from), turn.seq);
        inputs.set(turn.from, turn.seq);
        acks.add(turn.from);
      }
    }
    writes.set(STATE, this.state);
    this.inflight = { acks, inputs, outputs };
    return { writes, turns };
  }

  /** The batch is durable: what may now leave (messages, acknowledgements, outputs). */
  committed(now: number): KenOutput[] {
    const b = this.inflight;
    this.inflight = undefined;
    const outputs: KenOutput[] = [];
    if (!b) return outputs;
    for (const [from, seq] of b.inputs) this.inCommitted.set(from, seq);
    for (const [to, ob] of this.out) {
      if (ob.released === ob.assigned) continue;
      const before = ob.released;
      ob.released = ob.assigned;
      this.sendWindow(now, to, ob, outputs, false, before);
    }
    for (const from of b.acks)
      outputs.push({ type: "send", to: from, frame: { p: "ken", t: "a", u: this.inCommitted.get(from)! } });
    for (const fn of b.outputs) outputs.push({ type: "output", fn });
    return outputs;
  }

  /** Retransmit what has waited too long for an acknowledgement. */
  tick(now: number): KenOutput[] {
    const outputs: KenOutput[] = [];
    for (const [to, ob] of this.out) {
      if (ob.acked >= ob.released || now < ob.due) continue;
      this.stats.retransmits++;
      this.sendWindow(now, to, ob, outputs, true);
      ob.backoff = Math.min(ob.backoff * 2, this.o.retransmitMaxMs);
      ob.due = now + ob.backoff;
    }
    return outputs;
  }

  /** Unacknowledged messages per destination (for tests and metrics). */
  unacked(): Map<ProcessId, number> {
    const m = new Map<ProcessId, number>();
    for (const [to, ob] of this.out) if (ob.released > ob.acked) m.set(to, ob.released - ob.acked);
    return m;
  }

  /**
   * Send the released messages inside the window: all of them (`all`, a retransmission), or only
   * those past `after` (newly released, or newly inside the window after an acknowledgement).
   */
  private sendWindow(
    now: number,
    to: ProcessId,
    ob: Outbound,
    outputs: KenOutput[],
    all: boolean,
    after = 0,
  ): void {
    const limit = Math.min(ob.released, ob.acked + this.o.window);
    let sent = false;
    for (const m of ob.pending) {
      if (m.seq > limit) break;
      if (!all && m.seq <= after) continue;
      outputs.push({ type: "send", to, frame: { p: "ken", t: "m", s: m.seq, b: m.body } });
      sent = true;
    }
    if (sent && (all || ob.due === Number.POSITIVE_INFINITY)) ob.due = now + ob.backoff;
  }

  private outbound(to: ProcessId): Outbound {
    let ob = this.out.get(to);
    if (!ob) {
      ob = {
        assigned: 0,
        released: 0,
        acked: 0,
        pending: [],
        due: Number.POSITIVE_INFINITY,
        backoff: this.o.retransmitMinMs,
      };
      this.out.set(to, ob);
    }
    return ob;
  }
}
