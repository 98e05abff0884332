import type { SwimNode } from "../membership/swim-node.ts";
import type { Member } from "../membership/swim-types.ts";
import type { ConnectionEvent, NodeId, Transport } from "../net/transport.ts";
import type { Clock, Timer } from "../runtime/clock.ts";
import type { Detector } from "./detector.ts";
import type { Fencing } from "./fencing.ts";
import type { Monitor } from "./monitor.ts";
import type { Evidence, FailureKind, FailureReport } from "./report.ts";

/** Default correlation window: two of memberlist's probe periods (ms). */
export const CORRELATION_MS = 2000;

/** Members lost this recently count towards a partition's far side (ms). */
const RECENT_LOSS_MS = 60_000;

/** How long members quiet since a loss have to answer an ask before it is repeated (ms). */
export const RECHECK_MS = 1000;
/** Asks of members quiet since a loss before their silence counts (each a ping that may be lost). */
const RECHECKS = 3;
/** Quiet members asked at most, each round (SwimCore remembers 16 asks at once). */
const MAX_QUIET_ASKS = 8;

/** How long a transport `refused` stays relevant evidence that the host is up (ms). */
export const REFUSED_EVIDENCE_MS = 30_000;

/**
 * Turns SWIM's verdicts into typed reports. A member SWIM declares dead (no direct or indirect
 * probe answered through the whole suspicion timeout, from several members) is reported as
 *  - `process-exit`, suspected, when its host recently refused a connection (the kernel answered:
 *    the machine is up, nothing listens), or when its host's agent has answered all along while
 *    the member fell silent (the host is up; the process is gone or hung: SIGSTOP, a livelock), or
 *  - `host-crash`, suspected, when nothing answered at all, or
 *  - `partition`, suspected, naming both sides, when several members fall silent together (within
 *    a correlation window of two probe periods): from one side, a partition and several hosts
 *    crashing at once look alike; several at once is far likelier to be the network.
 * Certainty needs more than SWIM can know (the host agent, or a fence). A member that comes back
 * (a higher incarnation) is `recovered`; one that left gracefully is not a failure.
 */
export class MembershipDetector implements Detector {
  readonly name = "swim";
  private readonly refused = new Map<NodeId, number>();
  private readonly published = new Map<NodeId, FailureReport>();
  private readonly suspectedAt = new Map<NodeId, number>();
  /** When each member last answered a probe or an ask of this node's (directly or through a relay). */
  private readonly answeredAt = new Map<NodeId, number>();
  /** When a message from each member last arrived (one-way, it proves the sender up, not the path). */
  private readonly heardAt = new Map<NodeId, number>();
  /** When this node asked a member declared dead (and its host's agent) whether it answers. */
  private readonly askedAt = new Map<NodeId, number>();
  /** Members declared dead with no sign of their host, waiting out the correlation window. */
  private readonly held = new Map<NodeId, number>();
  private holdTimer: Timer | undefined;
  /** Lost members held again while members quiet since the loss are asked: how many times. */
  private readonly rechecked = new Map<NodeId, number>();
  /** Members quiet since a loss that were asked whether they answer. */
  private readonly quietAsked = new Set<NodeId>();
  /** Fences under way, by host: cancelled when any member of the host comes back. */
  private readonly fences = new Map<string, () => void>();
  private readonly correlationMs: number;
  private readonly offs: Array<() => void> = [];

  constructor(
    private readonly o: {
      swim: SwimNode;
      transport: Transport;
      monitor: Monitor;
      clock: Clock;
      /** How long verdicts about silent members are held to see whether several go together (ms). */
      correlationMs?: number;
      /** With leases and fences, a host crash becomes certain once its agent is fenced. */
      fencing?: Fencing;
      /** How long members quiet since a loss have to answer before a host is called crashed (ms). */
      recheckMs?: number;
      /** Whether a life of a member is bound by a lease (its agent said so). */
      leaseBound?: (subject: NodeId, boot: string | undefined) => boolean;
    },
  ) {
    this.correlationMs = o.correlationMs ?? CORRELATION_MS;
  }

  start(): void {
    this.offs.push(
      this.o.swim.on("member", (m, prev) => this.onMember(m, prev)),
      this.o.transport.on("connection", (e) => this.onConnection(e)),
      this.o.swim.on("path", (peer) => this.answeredAt.set(peer, this.o.clock.now())),
      this.o.transport.on("message", (from) => this.heardAt.set(from, this.o.clock.now())),
    );
  }

  stop(): void {
    for (const off of this.offs.splice(0)) off();
    for (const cancel of this.fences.values()) cancel();
    this.fences.clear();
    this.holdTimer?.cancel();
    this.holdTimer = undefined;
  }

  private onConnection(e: ConnectionEvent): void {
    if (e.kind === "refused") this.refused.set(e.peer, e.at);
    else if (e.kind === "connected") this.refused.delete(e.peer);
  }

  private onMember(m: Member, prev: Member["status"] | undefined): void {
    const now = this.o.clock.now();
    if (m.status === "suspect") {
      this.suspectedAt.set(m.id, now);
      // Word from its host's agent decides, later, between a process and its host: ask early.
      this.ask(this.hostAgent(m.id));
      return;
    }
    const since = this.suspectedAt.get(m.id) ?? now;
    this.suspectedAt.delete(m.id);
    if (m.status === "dead") {
      const refusedAt = this.refused.get(m.id);
      if (refusedAt !== undefined && now - refusedAt <= REFUSED_EVIDENCE_MS) {
        // The host answered (it refused a connection): this member's process is gone, not its host.
        this.publish(m.id, "process-exit", since, now, [
          this.swimEvidence(now),
          { source: "transport", what: "ECONNREFUSED", at: refusedAt, observer: this.o.swim.id },
        ]);
        return;
      }
      // Nothing answered. Hold the verdict briefly: several members lost at once is a partition
      // (named by its sides), one alone a host crash — unless the member, or its host's agent,
      // answers this node meanwhile: ask both now.
      this.askedAt.set(m.id, now);
      this.ask(m.id);
      this.ask(this.hostAgent(m.id));
      this.held.set(m.id, since);
      this.holdTimer ??= this.o.clock.setTimer(this.correlationMs, () => this.release());
      return;
    }
    this.held.delete(m.id);
    this.askedAt.delete(m.id);
    this.rechecked.delete(m.id);
    const host = this.hostOf(m.id);
    this.fences.get(host)?.();
    this.fences.delete(host);
    if (m.status === "alive" && prev !== undefined) {
      const failed = this.published.get(m.id);
      if (failed) {
        this.published.delete(m.id);
        this.o.monitor.publish({
          type: "recovered",
          subject: m.id,
          kind: failed.kind,
          detectedAt: now,
          failedAt: failed.detectedAt,
          detector: this.name,
        });
      }
    } else if (m.status === "left") {
      this.published.delete(m.id);
      this.o.monitor.forget(m.id, now, this.name);
    }
  }

  /** The correlation window closed: one lost member is a host crash, several a partition. */
  private release(): void {
    this.holdTimer = undefined;
    const now = this.o.clock.now();
    const held = [...this.held.entries()];
    this.held.clear();
    // A member that answers this node is alive from here, whatever others' gossip said (the far
    // side of a one-way partition): nothing to report. A member whose host's agent answers: the
    // host is up, the process is not (gone, or hung: a SIGSTOPped process's kernel still ACKs).
    // An agent merely not suspected yet proves nothing: a crashed host takes its agent along.
    const lost: Array<[NodeId, number]> = [];
    for (const [id, since] of held) {
      const asked = this.askedAt.get(id) ?? since;
      this.askedAt.delete(id);
      if (this.answeredSince(id, asked)) continue;
      const agent = this.hostAgent(id);
      if (agent !== undefined && (agent === this.o.swim.id || this.answeredSince(agent, since))) {
        this.publish(id, "process-exit", since, now, [
          this.swimEvidence(now),
          { source: "swim", what: `host agent ${agent} answers`, at: now, observer: this.o.swim.id },
        ]);
      } else {
        lost.push([id, since]);
      }
    }
    if (lost.length === 0) {
      for (const [id] of held) this.rechecked.delete(id);
      this.quietAsked.clear();
      return;
    }
    // The far side: what was lost now, what is suspected now, and what fell silent recently.
    const farSet = new Set(lost.map(([id]) => id));
    for (const m of this.o.swim.members()) {
      if (m.status === "suspect") farSet.add(m.id);
      const r = this.published.get(m.id);
      if (m.status === "dead" && r && r.kind !== "process-exit" && now - r.detectedAt <= RECENT_LOSS_MS)
        farSet.add(m.id);
    }
    // Members of one host fail together: what matters is how many hosts fell silent. A crashed
    // host sends nothing: one whose members' messages still arrive is up, and it is our traffic to
    // it that is lost (one way) — the network, so a partition, however many hosts it cuts off.
    const farHosts = new Set([...farSet].map((id) => this.hostOf(id)));
    const since = Math.min(...lost.map(([, s]) => s));
    const sending = [...farSet].filter((id) => (this.heardAt.get(id) ?? -Infinity) >= since);
    let silentToo: NodeId[] = [];
    if (farHosts.size === 1 && sending.length === 0) {
      // One host silent, and nothing else suspected yet. But a partition's far side is not lost all
      // at once: SWIM declares its members dead seconds apart, as its probes happen on them. A
      // member that has said nothing since this loss began may be on the far side too: ask such
      // members, and hold the verdict again; a crash leaves the others answering.
      const quiet = this.quiet(farHosts, since);
      // In a large cluster most members are quiet over a few seconds: the first round asks those
      // silent longest; later rounds ask again only those that have not answered (one unanswered
      // ping proves little on a lossy network), up to RECHECKS rounds.
      const asked = Math.min(...lost.map(([id]) => this.rechecked.get(id) ?? 0));
      const toAsk =
        asked === 0 ? quiet.slice(0, MAX_QUIET_ASKS) : quiet.filter((id) => this.quietAsked.has(id));
      if (toAsk.length > 0 && asked < RECHECKS) {
        for (const id of toAsk) {
          this.ask(id);
          this.quietAsked.add(id);
        }
        for (const [id, s] of lost) {
          this.held.set(id, s);
          this.rechecked.set(id, asked + 1);
        }
        this.holdTimer ??= this.o.clock.setTimer(this.o.recheckMs ?? RECHECK_MS, () => this.release());
        return;
      }
      // Asked, and still silent: on the far side with the lost.
      silentToo = toAsk;
      for (const id of silentToo) {
        farSet.add(id);
        farHosts.add(this.hostOf(id));
      }
    }
    for (const [id] of lost) this.rechecked.delete(id);
    this.quietAsked.clear();
    if (farHosts.size === 1 && sending.length === 0) {
      for (const [id, since] of lost) {
        const agent = this.hostAgent(id);
        const evidence = [this.swimEvidence(now)];
        if (agent !== undefined)
          evidence.push({
            source: "swim",
            what: `host agent ${agent} ${this.describeAgent(agent, since)}`,
            at: now,
            observer: this.o.swim.id,
          });
        this.publish(id, "host-crash", since, now, evidence);
      }
      this.fenceHost([...farHosts][0]!);
      return;
    }
    const far = [...farSet].sort();
    const near = [
      this.o.swim.id,
      ...this.o.swim
        .members()
        .filter((m) => m.status === "alive" && !farSet.has(m.id))
        .map((m) => m.id),
    ].sort();
    const why =
      farHosts.size > 1
        ? `${far.length} members of ${farHosts.size} hosts lost together${silentToo.length > 0 ? ` (${silentToo.sort().join(", ")} silent since, and cut off)` : ""}`
        : `${sending.sort().join(", ")} still send${sending.length === 1 ? "s" : ""} to this node, but do${sending.length === 1 ? "es" : ""} not answer it`;
    for (const [id, since] of lost) {
      this.publish(
        id,
        "partition",
        since,
        now,
        [this.swimEvidence(now), { source: "swim", what: why, at: now, observer: this.o.swim.id }],
        [near, far],
      );
    }
  }

  /**
   * Members thought alive, not on the given hosts, that this node has neither heard from nor had an
   * answer from since `t`; those silent longest first. A member this node's reachability row
   * lists is alive behind a broken direct path (its answers come through relays): not quiet.
   */
  private quiet(hosts: Set<string>, t: number): NodeId[] {
    const heard = (id: NodeId) => this.heardAt.get(id) ?? -Infinity;
    return this.o.swim
      .members()
      .filter((m) => m.status === "alive" && m.id !== this.o.swim.id && !hosts.has(this.hostOf(m.id)))
      .map((m) => m.id)
      .filter((id) => heard(id) < t && !this.answeredSince(id, t))
      .filter((id) => !this.o.swim.core.reach.cannotReach(this.o.swim.id, id))
      .sort((a, b) => heard(a) - heard(b) || (a < b ? -1 : 1));
  }

  /** The agent of `id`'s host (not `id` itself), if its host announced one. */
  private hostAgent(id: NodeId): NodeId | undefined {
    const host = this.o.swim.core.member(id)?.host;
    const agent = host === undefined ? undefined : `agent:${host}`;
    return agent === id ? undefined : agent;
  }

  /**
   * Whether a host's agent has answered since `since` (when a member of its host fell silent):
   * `answers` (heard from since, and not suspected since), `silent` (suspected or dead since, or
   * not a member), or `unknown` (alive as far as anyone said, but not heard from since).
   */
  /** What is known of a host's agent, in words, for evidence. */
  private describeAgent(agent: NodeId, since: number): string {
    const m = this.o.swim.core.member(agent);
    if (m === undefined || m.status !== "alive") return `is ${m?.status ?? "unknown"}`;
    const answered = this.answeredAt.get(agent);
    return `does not answer either (last answered ${answered === undefined ? "never" : `${(since - answered).toFixed(0)} ms before`})`;
  }

  /** Whether a member answered a probe or an ask of this node's at or after `t`. */
  private answeredSince(id: NodeId, t: number): boolean {
    const at = this.answeredAt.get(id);
    return at !== undefined && at >= t && this.o.swim.core.member(id)?.status !== "left";
  }

  /** Ping a member now (outside the probe rotation); its answer arrives as a `path` event. */
  private ask(id: NodeId | undefined): void {
    if (id !== undefined && id !== this.o.swim.id) this.o.swim.ask(id);
  }

  /** A member's host as it announced it (a member that announced none is a host of its own). */
  private hostOf(id: NodeId): string {
    return this.o.swim.core.member(id)?.host ?? `member:${id}`;
  }

  /**
   * Fence the silent host's agent at the witnesses; once its lease has surely ended, every
   * lease-bound life on the host that is still reported crashed is reported again, certain.
   */
  private fenceHost(host: string): void {
    const { fencing, leaseBound } = this.o;
    const agent = `agent:${host}`;
    const agentMember = this.o.swim.core.member(agent);
    if (!fencing || !leaseBound || this.fences.has(host) || agentMember?.host !== host) return;
    if (!leaseBound(agent, agentMember.boot)) return; // no lease to wait out: nothing would stop it
    const cancel = fencing.fence(agent, (at) => {
      this.fences.delete(host);
      for (const [id, r] of this.published) {
        const m = this.o.swim.core.member(id);
        if (r.kind !== "host-crash" || r.certainty === "certain" || this.hostOf(id) !== host) continue;
        if (m?.status !== "dead" || m.boot !== r.boot || !leaseBound(id, r.boot)) continue;
        const evidence: Evidence = {
          source: "fence",
          what: `${agent} fenced at a majority of witnesses; its lease has ended`,
          at,
          observer: this.o.swim.id,
        };
        const certain: FailureReport = {
          ...r,
          certainty: "certain",
          detectedAt: at,
          evidence: [...r.evidence, evidence],
        };
        this.published.set(id, certain);
        this.o.monitor.publish(certain);
      }
    });
    this.fences.set(host, cancel);
  }

  private swimEvidence(now: number): Evidence {
    return { source: "swim", what: "suspicion-timeout", at: now, observer: this.o.swim.id };
  }

  private publish(
    id: NodeId,
    kind: FailureKind,
    since: number,
    now: number,
    evidence: Evidence[],
    sides?: NodeId[][],
  ): void {
    const report: FailureReport = {
      type: "failure",
      subject: id,
      kind,
      certainty: "suspected",
      detectedAt: now,
      since,
      evidence,
      detector: this.name,
    };
    if (sides) report.sides = sides;
    const boot = this.o.swim.core.member(id)?.boot;
    if (boot) report.boot = boot;
    this.published.set(id, report);
    this.o.monitor.publish(report);
  }
}
