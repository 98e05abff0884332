import type { Logger } from "pino";
import type { DetectionNode } from "../detect/detection-node.ts";
import type { FailureReport } from "../detect/report.ts";
import type { NodeId, Transport } from "../net/transport.ts";
import { type Clock, setTimerAfterIo, type Timer } from "../runtime/clock.ts";
import { encode } from "../runtime/codec.ts";
import { Emitter } from "../runtime/emitter.ts";
import { ErrorCode, FaultlineError } from "../runtime/errors.ts";
import { silentLogger } from "../runtime/logger.ts";
import { FUSE_DEFAULTS, FuseCore, type FuseOptions, type FuseOutput } from "./fuse-core.ts";
import { type FuseReason, type GroupId, isFuse, MAX_PAYLOAD_BYTES, parseFuse } from "./messages.ts";

export interface FuseNodeOptions {
  id: NodeId;
  /** This node's life (its transport's boot id): its groups die with it. */
  boot: string;
  transport: Transport;
  clock: Clock;
  /**
   * The node's detection: its reports about members fail their groups, and its SWIM probes carry
   * the group digests. Build it with `extension: (peer) => fuse.digest(peer)`.
   */
  detection: DetectionNode;
  fuse?: Partial<FuseOptions>;
  logger?: Logger;
}

/** What a member's handler receives. */
export interface FuseNotification {
  group: GroupId;
  reason: FuseReason;
  members: NodeId[];
}

/** The failure kinds that fail a group: the member, or every path to it, is gone. */
const FATAL = new Set(["process-exit", "host-crash", "partition"]);

type Events = { failure: [n: FuseNotification] };

/**
 * FUSE groups on a node: the host side of FuseCore. `create` makes a group, `signal` fails one,
 * and `onFailure` / `group(id).failures()` hear, once per group, that it failed and why.
 */
export class FuseNode {
  readonly core: FuseCore;
  private readonly emitter: Emitter<Events>;
  private readonly perGroup = new Map<GroupId, Array<(n: FuseNotification) => void>>();
  private readonly creating = new Map<number, (err: Error | undefined, g: GroupId) => void>();
  private req = 0;
  private ticker: Timer | undefined;
  private readonly offs: Array<() => void> = [];
  private readonly log: Logger;
  malformed = 0;

  constructor(private readonly o: FuseNodeOptions) {
    this.core = new FuseCore(o.id, o.boot, o.fuse);
    this.log = (o.logger ?? silentLogger()).child({ component: "fuse", node: o.id });
    this.emitter = new Emitter((err) => this.log.error({ err }, "a FUSE failure handler threw"));
  }

  /** The digest SWIM carries to `peer` (pass as the DetectionNode's `extension`). */
  digest(peer: NodeId): string | undefined {
    return this.core.digest(peer);
  }

  start(): void {
    const now = () => this.o.clock.now();
    this.offs.push(
      this.o.transport.on("message", (from, m) => {
        if (!isFuse(m)) return;
        const msg = parseFuse(m);
        if (!msg) {
          this.malformed++;
          return;
        }
        this.perform(this.core.receive(now(), from, msg));
      }),
      this.o.detection.monitor.subscribe({ recovered: false }, (r) => {
        const f = r as FailureReport;
        if (!FATAL.has(f.kind) || f.subject === this.o.id) return;
        const reason: FuseReason = {
          type: "member-failed",
          member: f.subject,
          kind: f.kind,
          detail: `${f.certainty}, by ${f.detector}`,
        };
        this.perform(this.core.memberFailed(now(), f.subject, reason, f.boot));
      }),
      this.o.detection.swim.on("member", (m) => {
        if (m.status === "alive" && m.boot) this.perform(this.core.memberBoot(now(), m.id, m.boot));
        else if (m.status === "left")
          this.perform(
            this.core.memberFailed(now(), m.id, {
              type: "member-failed",
              member: m.id,
              kind: "process-exit",
              detail: "left the cluster",
            }),
          );
      }),
      this.o.detection.swim.on("extension", (peer, x) => this.perform(this.core.onDigest(now(), peer, x))),
    );
    const tick = () => {
      this.perform(this.core.tick(now()));
      // A creation's deadline after a pause of this process reads the acks that came meanwhile first.
      this.ticker = setTimerAfterIo(this.o.clock, this.o.fuse?.retryMs ?? FUSE_DEFAULTS.retryMs, tick);
    };
    tick();
  }

  stop(): void {
    for (const off of this.offs.splice(0)) off();
    this.ticker?.cancel();
    for (const c of this.creating.values()) c(new FaultlineError(ErrorCode.Stopped, "FUSE node stopped"), "");
    this.creating.clear();
  }

  /**
   * Create a group of `members` (this node is added). Resolves with its id once every member has
   * joined; rejects (FL_FUSE_CREATE) if one could not be reached in time — every member already
   * contacted is then notified.
   */
  create(members: readonly NodeId[]): Promise<GroupId> {
    return new Promise((resolve, reject) =>
      this.createWith(members, (err, g) => (err ? reject(err) : resolve(g))),
    );
  }

  /** `create` with a callback, run in step with the protocol (the simulator uses it). */
  createWith(members: readonly NodeId[], done: (err: Error | undefined, g: GroupId) => void): void {
    const req = ++this.req;
    this.creating.set(req, done);
    this.perform(this.core.create(this.o.clock.now(), members, req));
  }

  /** Fail group `g` on purpose, with a small payload every member receives. */
  signal(g: GroupId, payload?: unknown): void {
    if (payload !== undefined && encode(payload).length > MAX_PAYLOAD_BYTES)
      throw new FaultlineError(
        ErrorCode.BadArgument,
        `a FUSE signal's payload is at most ${MAX_PAYLOAD_BYTES} bytes`,
      );
    const { ok, out } = this.core.signal(this.o.clock.now(), g, payload);
    if (!ok)
      throw new FaultlineError(
        ErrorCode.BadArgument,
        `no live FUSE group ${g} here (unknown, or already failed)`,
      );
    this.perform(out);
  }

  /** Every group failure at this node, once each. */
  onFailure(fn: (n: FuseNotification) => void): () => void {
    return this.emitter.on("failure", fn);
  }

  /** One group: its failure (handler, or an async iterable that yields it once, then ends). */
  group(g: GroupId): {
    onFailure(fn: (n: FuseNotification) => void): void;
    failure(): Promise<FuseNotification>;
  } {
    const on = (fn: (n: FuseNotification) => void) => {
      const reason = this.core.reason(g);
      if (this.core.state(g) === "failed" && reason) {
        fn({ group: g, reason, members: this.core.members(g) ?? [] });
        return;
      }
      const list = this.perGroup.get(g) ?? [];
      list.push(fn);
      this.perGroup.set(g, list);
    };
    return { onFailure: on, failure: () => new Promise((resolve) => on(resolve)) };
  }

  private perform(out: FuseOutput[]): void {
    for (const o of out) {
      switch (o.type) {
        case "send":
          try {
            this.o.transport.send(o.to, o.msg);
          } catch {
            // not reachable now: retried on the next tick
          }
          break;
        case "notify": {
          const n: FuseNotification = { group: o.group, reason: o.reason, members: o.members };
          this.emitter.emit("failure", n);
          for (const fn of this.perGroup.get(o.group) ?? []) fn(n);
          this.perGroup.delete(o.group);
          break;
        }
        case "created": {
          const c = this.creating.get(o.req);
          this.creating.delete(o.req);
          c?.(undefined, o.group);
          break;
        }
        case "create-failed": {
          const c = this.creating.get(o.req);
          this.creating.delete(o.req);
          const err = new FaultlineError(
            ErrorCode.FuseCreate,
            `FUSE group creation failed: ${JSON.stringify(o.reason)}`,
          );
          c?.(Object.assign(err, { reason: o.reason, group: o.group }), o.group);
          break;
        }
      }
    }
  }
}
