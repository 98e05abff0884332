import type { Logger } from "pino";
import type { Monitor } from "../detect/monitor.ts";
import type { FailureReport } from "../detect/report.ts";
import type { Transport } from "../net/transport.ts";
import type { Clock, Timer } from "../runtime/clock.ts";
import { silentLogger } from "../runtime/logger.ts";
import {
  type DurableHandlers,
  KenCore,
  type KenOptions,
  type KenOutput,
  type ProcessId,
} from "./ken-core.ts";
import { isKenFrame, parseKen } from "./messages.ts";
import type { DurableStore } from "./store.ts";

export interface DurableProcessOptions<S> {
  /** The process's id: its transport's node id. */
  id: ProcessId;
  transport: Transport;
  clock: Clock;
  store: DurableStore;
  handlers: DurableHandlers<S>;
  /**
   * Group commit (default on): every turn that is ready runs before one commit, up to `maxBatch`
   * turns. Nothing any of them produced leaves before that commit. Off: one commit per turn.
   */
  groupCommit?: boolean;
  maxBatch?: number;
  /**
   * Release a batch's messages in a step of its own after the commit (the simulator sets it, so
   * that a crash can fall between the commit and the sends).
   */
  deferRelease?: boolean;
  /**
   * Reports to act on: a channel whose peer's host is certainly crashed gives up (typed error to
   * `onChannelError`); a process exit does not (the peer will be restarted and resume).
   */
  monitor?: Monitor;
  ken?: Partial<KenOptions>;
  logger?: Logger;
  /** Told after each durable commit (tests and the simulator keep an independent record). */
  onCommit?: (turns: number) => void;
}

/**
 * A durable process on a Transport, a Clock and a DurableStore: the host side of KenCore. Frames
 * and local inputs queue turns; the queued turns run, their batch is committed, and only then do
 * their messages, acknowledgements and outputs leave.
 */
export class DurableProcess<S> {
  readonly id: ProcessId;
  private core!: KenCore<S>;
  private readonly log: Logger;
  private scheduled: Timer | undefined;
  private ticker: Timer | undefined;
  private releasing = false;
  private offs: Array<() => void> = [];
  private running = false;
  private readonly groupCommit: boolean;
  private readonly maxBatch: number;

  constructor(private readonly o: DurableProcessOptions<S>) {
    this.id = o.id;
    this.log = (o.logger ?? silentLogger()).child({ component: "durable", process: o.id });
    this.groupCommit = o.groupCommit ?? true;
    this.maxBatch = this.groupCommit ? (o.maxBatch ?? 1024) : 1;
  }

  /** Load the last committed state and outbox, and resend what was not acknowledged. */
  start(): void {
    if (this.running) return;
    this.running = true;
    this.core = new KenCore(this.o.id, this.o.handlers, this.o.store.load(), this.o.ken ?? {}, (e, turn) =>
      this.log.error(
        { err: e, turn },
        "a turn's handler threw: the turn was rolled back and its input dropped",
      ),
    );
    this.offs.push(
      this.o.transport.on("message", (from, m) => {
        if (!isKenFrame(m)) return;
        const f = parseKen(m);
        if (!f) {
          this.core.stats.malformed++;
          return;
        }
        this.perform(this.core.receive(this.o.clock.now(), from, f));
        this.schedule();
      }),
    );
    if (this.o.monitor) {
      this.offs.push(
        this.o.monitor.subscribe({ kind: "host-crash", certainty: "certain" }, (r) => {
          const f = r as FailureReport;
          this.retire(f.subject, `host of ${f.subject} crashed (certain)`);
        }),
      );
    }
    this.perform(this.core.start(this.o.clock.now()));
    this.tick();
    this.schedule();
  }

  stop(): void {
    this.running = false;
    for (const off of this.offs.splice(0)) off();
    this.scheduled?.cancel();
    this.scheduled = undefined; // else a later start() would never schedule a batch again
    this.ticker?.cancel();
  }

  /** Queue a local input (its turn runs `handlers.onInput`). */
  submit(input: unknown): void {
    this.core.input(input);
    this.schedule();
  }

  /** Give up on a peer: its unacknowledged messages go to `onChannelError`, typed. */
  retire(peer: ProcessId, reason = "retired by the operator"): void {
    this.core.retire(peer, reason);
    this.schedule();
  }

  /** The state as of the last turn (durable, or about to be). */
  get state(): S {
    return this.core.current;
  }

  get stats() {
    return this.core.stats;
  }

  unacked(): Map<ProcessId, number> {
    return this.core.unacked();
  }

  private schedule(): void {
    if (!this.running || this.scheduled || this.releasing) return;
    this.scheduled = this.o.clock.setTimer(0, () => {
      this.scheduled = undefined;
      this.flush();
    });
  }

  private flush(): void {
    if (!this.running) return;
    const batch = this.core.runTurns(this.maxBatch);
    if (!batch) return;
    this.o.store.commit(batch.writes); // throws if it cannot: the process must not go on
    this.o.onCommit?.(batch.turns);
    if (this.o.deferRelease) {
      this.releasing = true;
      this.o.clock.setTimer(0, () => {
        this.releasing = false;
        if (!this.running) return;
        this.release();
      });
      return;
    }
    this.release();
  }

  private release(): void {
    this.perform(this.core.committed(this.o.clock.now()));
    if (this.core.hasWork()) this.schedule();
  }

  private tick(): void {
    if (!this.running) return;
    this.perform(this.core.tick(this.o.clock.now()));
    this.ticker = this.o.clock.setTimer(this.o.ken?.retransmitMinMs ?? 50, () => this.tick());
  }

  private perform(outputs: KenOutput[]): void {
    for (const out of outputs) {
      if (out.type === "output") {
        try {
          out.fn();
        } catch (err) {
          this.log.error({ err }, "an output callback threw");
        }
        continue;
      }
      try {
        this.o.transport.send(out.to, out.frame);
      } catch {
        // not reachable now: the retransmission timer sends it again
      }
    }
  }
}
