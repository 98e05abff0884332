import type { SwimNode } from "../membership/swim-node.ts";
import type { IntegrityEvent, NodeId, Transport } from "../net/transport.ts";
import type { Clock, Timer } from "../runtime/clock.ts";
import type { Detector } from "./detector.ts";
import type { Monitor } from "./monitor.ts";
import type { FailureKind } from "./report.ts";

export const PATH_DEFAULTS = {
  /** Probes in a row answered only through a relay before the direct path is reported failed. */
  failAfter: 5,
  /** Direct answers in a row before it is reported recovered. */
  recoverAfter: 2,
  /** Window over which changes of a path's state are counted (ms). */
  flapWindowMs: 60_000,
  /** Changes within the window that make a path unstable; it is stable again at half as many. */
  flapThreshold: 6,
  /** Integrity failures from one peer within the window that are reported as corruption. */
  corruptAfter: 3,
  /** A corrupting path is recovered after this long without an integrity failure (ms). */
  corruptQuietMs: 30_000,
  /** How often quiet-time recoveries are evaluated (ms). */
  tickMs: 1000,
  /** Congestion: the median of the last rttSamples direct RTTs exceeds rttFactor × the path's
   *  baseline (its lowest RTT in baselineWindowMs) and rttFloorMs. Clears below half of that. */
  rttSamples: 5,
  rttFactor: 5,
  rttFloorMs: 20,
  baselineWindowMs: 300_000,
  /** Round trips are not judged for this long after the path's state changed (ms): right after an
   *  outage they carry TCP's retransmission backoff (a 1.5 s outage can delay data by as much
   *  again), the symptom of the outage, not of a queue. */
  rttSettleMs: 5000,
  /** Congestion not confirmed by a judged window for this long is cleared (ms). */
  congestionStaleMs: 30_000,
} as const;

export type PathOptions = { -readonly [K in keyof typeof PATH_DEFAULTS]?: number };

interface PathState {
  indirectStreak: number;
  directStreak: number;
  last: boolean | undefined;
  /** When a probe was last answered directly (ms). */
  lastDirect: number | undefined;
  changes: number[];
  /** When the path was seen down two probes in a row (a lost packet fails one probe, not two). */
  downs: number[];
  integrity: number[];
  current: Set<FailureKind>;
  since: Partial<Record<FailureKind, number>>;
}

/**
 * The network path to a host, which every member on it shares: round trips to any of them are
 * samples of one queue, so they are judged together (this node probes each member in turn).
 */
interface HostPath {
  /** Recent direct round trips (ms), since the path last failed or came back. */
  rtts: number[];
  /** Baseline samples [time, rtt]: a monotone deque whose head is the least in the window. */
  baseline: Array<[number, number]>;
  /** When a path to a member of the host last went from working to not, or back (ms). */
  lastChange: number | undefined;
  /** When its round trips were last judged congested (ms). */
  congestedAt: number | undefined;
}

/**
 * Conditions of the path from this node to a peer, from the evidence SWIM and the transport give:
 *  - `route-failure`: the peer is alive (a relay reached it) but failAfter probes in a row got no
 *    direct answer, the path is not flapping, and no frame from the peer failed its integrity check
 *    since its last direct answer (within corruptQuietMs: a damaged frame arrived, so the route
 *    carries packets);
 *  - `route-instability`: the direct path changed between working and not flapThreshold times
 *    within flapWindowMs, and at least once it stayed down for two probes in a row (SWIM probes a
 *    path again at once after an indirect answer): on a lossy path a lost ping or ack makes single
 *    indirect answers, which alone would look like flaps;
 *  - `corruption`: corruptAfter frames from the peer failed their integrity check within the window;
 *  - `congestion`: the peer answers, but slowly. Its host's network path is judged as one (round
 *    trips to every member on the host are samples of the same queue): the median of the last
 *    rttSamples direct answers is rttFactor times the host's baseline (the lowest RTT in the last
 *    baselineWindowMs) and above rttFloorMs, and even the least of them is above half that limit —
 *    a standing queue, not a backlog that drains. No failed probe among them, and none within
 *    rttSettleMs of a path to the host failing or coming back (TCP's retransmissions then delay
 *    answers: a flapping path's symptom, not a queue's);
 * While corruption or congestion holds, the probes they make fail are not also reported as route
 * conditions.
 * Each clears with hysteresis (a streak of direct answers; half the changes; a quiet period), so a
 * flapping path does not flood subscribers. Reports name the peer as subject and this node as `peer`.
 */
export class PathDetector implements Detector {
  readonly name = "path";
  private readonly paths = new Map<NodeId, PathState>();
  private readonly hosts = new Map<string, HostPath>();
  private readonly o: Required<PathOptions>;
  private readonly offs: Array<() => void> = [];
  private timer: Timer | undefined;
  private stopped = false;

  constructor(
    private readonly d: { id: NodeId; swim: SwimNode; transport: Transport; monitor: Monitor; clock: Clock },
    options: PathOptions = {},
  ) {
    this.o = { ...PATH_DEFAULTS, ...options } as Required<PathOptions>;
  }

  start(): void {
    this.offs.push(
      this.d.swim.on("path", (peer, direct, rtt) => this.onPath(peer, direct, rtt)),
      this.d.transport.on("integrity", (e) => this.onIntegrity(e)),
      this.d.swim.on("member", (m) => {
        if (m.status === "dead" || m.status === "left") this.forget(m.id);
      }),
    );
    this.tick();
  }

  stop(): void {
    this.stopped = true;
    for (const off of this.offs.splice(0)) off();
    this.timer?.cancel();
  }

  /** The peer's host as it announced it; a member that announced none is a host of its own. */
  private hostKey(peer: NodeId): string {
    return this.d.swim.core.member(peer)?.host ?? `member:${peer}`;
  }

  private state(peer: NodeId): PathState {
    let s = this.paths.get(peer);
    if (!s) {
      s = {
        indirectStreak: 0,
        directStreak: 0,
        last: undefined,
        lastDirect: undefined,
        changes: [],
        downs: [],
        integrity: [],
        current: new Set(),
        since: {},
      };
      this.paths.set(peer, s);
    }
    return s;
  }

  private onPath(peer: NodeId, direct: boolean, rtt: number | undefined): void {
    const now = this.d.clock.now();
    const s = this.state(peer);
    const key = this.hostKey(peer);
    let h = this.hosts.get(key);
    if (!h) {
      h = { rtts: [], baseline: [], lastChange: undefined, congestedAt: undefined };
      this.hosts.set(key, h);
    }
    if (s.last !== undefined && s.last !== direct) h.lastChange = now;
    // Congestion is a path that answers, slowly: only over a run of direct answers.
    if (!direct) h.rtts.length = 0;
    else if (rtt !== undefined) this.onRtt(peer, s, h, now, rtt);
    if (direct) {
      s.lastDirect = now;
      s.directStreak++;
      s.indirectStreak = 0;
    } else {
      s.indirectStreak++;
      s.directStreak = 0;
      if (s.indirectStreak === 2) s.downs.push(now);
      // The peer is alive (a relay reached it) and the direct path failed twice in a row: the
      // connection may be stalled in TCP's retransmission backoff after an outage, which outlasts
      // the outage. A fresh connection measures the path as it is now.
      if (s.indirectStreak >= 2) this.d.transport.refresh?.(peer);
    }
    if (s.last !== undefined && s.last !== direct) s.changes.push(now);
    s.last = direct;
    prune(s.changes, now - this.o.flapWindowMs);
    prune(s.downs, now - this.o.flapWindowMs);

    // Frames failing their integrity check, or a congested path, explain failed probes: report
    // the cause, not its symptoms.
    if (s.current.has("corruption") || s.current.has("congestion")) {
      this.clear(peer, s, "route-failure", now);
      this.clear(peer, s, "route-instability", now);
      return;
    }
    const flapping = s.changes.length >= this.o.flapThreshold && s.downs.length > 0;
    if (flapping)
      this.raise(
        peer,
        s,
        "route-instability",
        now,
        `${s.changes.length} changes in ${this.o.flapWindowMs / 1000} s`,
      );
    else if (s.current.has("route-instability") && s.changes.length <= this.o.flapThreshold / 2) {
      this.clear(peer, s, "route-instability", now);
    }
    if (
      !direct &&
      s.indirectStreak >= this.o.failAfter &&
      s.changes.length <= 2 &&
      !s.current.has("route-instability") &&
      !this.damagedSinceDirect(s, now)
    ) {
      this.raise(peer, s, "route-failure", now, `${s.indirectStreak} probes answered only through a relay`);
    } else if ((direct && s.directStreak >= this.o.recoverAfter) || s.current.has("route-instability")) {
      this.clear(peer, s, "route-failure", now);
    }
  }

  /** Accrual over round trips: a host whose RTTs climb far above its own baseline is congested. */
  private onRtt(peer: NodeId, s: PathState, h: HostPath, now: number, rtt: number): void {
    while (h.baseline.length > 0 && h.baseline.at(-1)![1] >= rtt) h.baseline.pop();
    h.baseline.push([now, rtt]);
    while (h.baseline.length > 0 && h.baseline[0]![0] < now - this.o.baselineWindowMs) h.baseline.shift();
    // Right after a path to the host failed or came back, round trips carry TCP's retransmissions
    // (a flapping path's symptom), not a queue's: they are neither kept nor judged for a while.
    if (h.lastChange !== undefined && now - h.lastChange < this.o.rttSettleMs) {
      h.rtts.length = 0;
      return;
    }
    h.rtts.push(rtt);
    if (h.rtts.length > this.o.rttSamples) h.rtts.shift();
    if (h.rtts.length < this.o.rttSamples) return;
    const base = h.baseline[0]![1];
    const sorted = [...h.rtts].sort((a, b) => a - b);
    const median = sorted[Math.floor(sorted.length / 2)]!;
    const limit = Math.max(this.o.rttFactor * base, this.o.rttFloorMs);
    // A standing queue, as CoDel tells one: even the fastest recent round trip stays well above the
    // baseline. A backlog behind a retransmission (a flapping path) drains, and some answer
    // between outages comes back near the baseline.
    if (median > limit && sorted[0]! > limit / 2) {
      h.congestedAt = now;
      this.raise(
        peer,
        s,
        "congestion",
        now,
        `median RTT ${median.toFixed(1)} ms (least ${sorted[0]!.toFixed(1)} ms) over the last ${sorted.length} to its host, baseline ${base.toFixed(2)} ms`,
      );
    } else if (median < limit / 2) {
      this.clear(peer, s, "congestion", now);
    }
  }

  /**
   * A frame from the peer failed its check since its last direct answer, and not corruptQuietMs
   * ago: the route carries its packets (damaged), so failed probes are no evidence of a failed
   * route. Until corruptAfter such frames make it corruption, nothing is said about the path (as
   * corruption, once reported, holds until corruptQuietMs without a damaged frame).
   */
  private damagedSinceDirect(s: PathState, now: number): boolean {
    const lastBad = s.integrity.at(-1);
    return (
      lastBad !== undefined &&
      now - lastBad < this.o.corruptQuietMs &&
      (s.lastDirect === undefined || lastBad >= s.lastDirect)
    );
  }

  private onIntegrity(e: IntegrityEvent): void {
    const now = this.d.clock.now();
    const s = this.state(e.peer);
    s.integrity.push(now);
    prune(s.integrity, now - this.o.flapWindowMs);
    this.clear(e.peer, s, "route-failure", now);
    if (s.integrity.length >= this.o.corruptAfter) {
      this.raise(
        e.peer,
        s,
        "corruption",
        now,
        `${s.integrity.length} frames failed their integrity check (${e.reason})`,
      );
    }
  }

  private tick(): void {
    const now = this.d.clock.now();
    for (const [peer, s] of this.paths) {
      const lastBad = s.integrity.at(-1);
      if (s.current.has("corruption") && (lastBad === undefined || now - lastBad >= this.o.corruptQuietMs)) {
        this.clear(peer, s, "corruption", now);
      }
      prune(s.changes, now - this.o.flapWindowMs);
      if (s.current.has("route-instability") && s.changes.length <= this.o.flapThreshold / 2) {
        this.clear(peer, s, "route-instability", now);
      }
      // Congestion not confirmed for a while (the host's answers stopped filling a window: the
      // path now fails, or flaps) is not assumed to last: cleared, so route conditions show again.
      const congestedAt = this.hosts.get(this.hostKey(peer))?.congestedAt;
      if (
        s.current.has("congestion") &&
        (congestedAt === undefined || now - congestedAt >= this.o.congestionStaleMs)
      ) {
        this.clear(peer, s, "congestion", now);
      }
    }
    if (!this.stopped) this.timer = this.d.clock.setTimer(this.o.tickMs, () => this.tick());
  }

  private raise(peer: NodeId, s: PathState, kind: FailureKind, now: number, what: string): void {
    if (s.current.has(kind)) return;
    s.current.add(kind);
    s.since[kind] = now;
    this.d.monitor.publish({
      type: "failure",
      subject: peer,
      peer: this.d.id,
      kind,
      certainty: "suspected",
      detectedAt: now,
      since: now,
      evidence: [{ source: this.name, what, at: now, observer: this.d.id }],
      detector: this.name,
    });
  }

  private clear(peer: NodeId, s: PathState, kind: FailureKind, now: number): void {
    if (!s.current.delete(kind)) return;
    this.d.monitor.publish({
      type: "recovered",
      subject: peer,
      peer: this.d.id,
      kind,
      detectedAt: now,
      failedAt: s.since[kind] ?? now,
      detector: this.name,
    });
  }

  private forget(peer: NodeId): void {
    const s = this.paths.get(peer);
    if (!s) return;
    const now = this.d.clock.now();
    for (const k of [...s.current]) this.clear(peer, s, k, now);
    this.paths.delete(peer);
    const host = this.hostKey(peer);
    if (![...this.paths.keys()].some((p) => this.hostKey(p) === host)) this.hosts.delete(host);
  }
}

function prune(times: number[], before: number): void {
  while (times.length > 0 && times[0]! < before) times.shift();
}
