import type { Logger } from "pino";
import type { NodeId } from "../net/transport.ts";
import { Emitter } from "../runtime/emitter.ts";
import { ErrorCode, FaultlineError } from "../runtime/errors.ts";
import { silentLogger } from "../runtime/logger.ts";
import {
  conditionKey,
  type FailureReport,
  matches,
  type RecoveredReport,
  type ReportEvent,
  type ReportFilter,
} from "./report.ts";

/** What is known about a subject (or a path) right now. */
export interface Condition {
  subject: NodeId;
  /** "ok", or the current failure reports about it (several kinds can hold at once). */
  state: "ok" | "failed";
  reports: FailureReport[];
}

type MonitorEvents = { report: [ReportEvent] };

/** Most reports a watch() stream buffers for a slow consumer before it drops the oldest. */
export const WATCH_BUFFER = 10_000;

/** How many subjects' failed lives a Monitor remembers, and how many lives of each. */
const MAX_SUBJECTS_REMEMBERED = 10_000;
const MAX_LIVES_REMEMBERED = 8;

/**
 * The application's view of failures: push (subscribe, watch) and pull (status, snapshot).
 * Detectors publish into it; it keeps one current report per condition (subject, kind, peer), so
 * a repeated report only updates evidence and a `recovered` clears exactly what it names.
 */
export class Monitor {
  private readonly current = new Map<string, FailureReport>();
  /** The lives (boots) of each subject that failure reports have named, latest last. */
  private readonly failedLives = new Map<NodeId, string[]>();
  private readonly emitter: Emitter<MonitorEvents>;

  constructor(logger: Logger = silentLogger()) {
    const log = logger.child({ component: "monitor" });
    this.emitter = new Emitter((err) =>
      log.error({ err }, "a report subscriber threw; others still get the report"),
    );
  }

  /** Detectors call this. A report for a condition already current is merged, not re-announced. */
  publish(event: ReportEvent): void {
    const key = conditionKey(event);
    if (event.type === "failure") {
      const prev = this.current.get(key);
      // Lives of the subject in the order reports first named them (the latest last).
      const lives = this.namedLives(event.subject, event.boot);
      if (prev?.boot !== undefined && event.boot !== undefined && event.boot !== prev.boot) {
        // Another life than the current condition's. An older one: a lagging detector's, ignored
        // (it must not replace what is known of the newer life). A newer one: a new failure,
        // whatever is current about the old life — announced, so what reacts to failures reacts again.
        if (lives.indexOf(event.boot) < lives.indexOf(prev.boot)) return;
        this.current.set(key, event);
        this.emitter.emit("report", event);
        return;
      }
      if (prev && prev.certainty === event.certainty) {
        // A copy: subscribers already hold `prev`.
        this.current.set(key, { ...prev, evidence: [...prev.evidence, ...event.evidence].slice(-16) });
        return;
      }
      if (prev && prev.certainty === "certain" && event.certainty === "suspected") return; // never downgrade
      // An upgrade that does not name the life keeps the life it is about.
      const next =
        prev?.boot !== undefined && event.boot === undefined ? { ...event, boot: prev.boot } : event;
      this.current.set(key, next);
      this.emitter.emit("report", next);
    } else {
      const prev = this.current.get(key);
      if (!prev) return;
      this.current.delete(key);
      this.emitter.emit("report", event);
    }
  }

  /** The lives of `subject` reports have named, oldest first, with `boot` added if it is new. */
  private namedLives(subject: NodeId, boot: string | undefined): string[] {
    const lives = this.failedLives.get(subject) ?? [];
    if (boot === undefined || lives.includes(boot)) return lives;
    lives.push(boot);
    if (lives.length > MAX_LIVES_REMEMBERED) lives.shift();
    this.failedLives.delete(subject); // re-inserted last: the map forgets the least recent first
    this.failedLives.set(subject, lives);
    if (this.failedLives.size > MAX_SUBJECTS_REMEMBERED)
      this.failedLives.delete(this.failedLives.keys().next().value as NodeId);
    return lives;
  }

  /** Call `handler` for every report matching `filter`; returns an unsubscribe function. */
  subscribe(filter: ReportFilter, handler: (r: ReportEvent) => void): () => void {
    return this.emitter.on("report", (r) => {
      if (matches(filter, r)) handler(r);
    });
  }

  /** The reports matching `filter` as an async stream, until `signal` aborts or the loop breaks. */
  watch(filter: ReportFilter = {}, options: { signal?: AbortSignal } = {}): AsyncIterable<ReportEvent> {
    const self = this;
    return {
      [Symbol.asyncIterator](): AsyncIterator<ReportEvent> {
        const queue: ReportEvent[] = [];
        const waiting: Array<() => void> = [];
        let done = false;
        const wakeAll = () => {
          for (const w of waiting.splice(0)) w();
        };
        const unsubscribe = self.subscribe(filter, (r) => {
          queue.push(r);
          if (queue.length > WATCH_BUFFER) queue.shift();
          wakeAll();
        });
        const finish = () => {
          if (done) return;
          done = true;
          unsubscribe();
          options.signal?.removeEventListener("abort", finish);
          wakeAll();
        };
        if (options.signal?.aborted) finish();
        else options.signal?.addEventListener("abort", finish, { once: true });
        return {
          async next(): Promise<IteratorResult<ReportEvent>> {
            while (queue.length === 0 && !done) await new Promise<void>((r) => waiting.push(r));
            const value = queue.shift();
            if (value !== undefined) return { value, done: false };
            return { value: undefined, done: true };
          },
          async return(): Promise<IteratorResult<ReportEvent>> {
            finish();
            return { value: undefined, done: true };
          },
        };
      },
    };
  }

  /** The current condition of a subject, or of the path from → to. */
  status(subject: NodeId, to?: NodeId): Condition {
    if (typeof subject !== "string" || subject.length === 0) {
      throw new FaultlineError(ErrorCode.BadArgument, "status() needs a subject id");
    }
    const reports = [...this.current.values()].filter((r) =>
      to === undefined ? r.subject === subject && r.peer === undefined : pathMatches(r, subject, to),
    );
    return {
      subject: to === undefined ? subject : `${subject}->${to}`,
      state: reports.length ? "failed" : "ok",
      reports,
    };
  }

  /** Every current failure report. */
  snapshot(): FailureReport[] {
    return [...this.current.values()];
  }

  /** Clear a condition on the monitor's own initiative (e.g. a subject removed from the cluster). */
  forget(subject: NodeId, at: number, detector: string): void {
    for (const r of [...this.current.values()]) {
      if (r.subject === subject) {
        const rec: RecoveredReport = {
          type: "recovered",
          subject,
          kind: r.kind,
          detectedAt: at,
          failedAt: r.detectedAt,
          detector,
        };
        if (r.peer !== undefined) rec.peer = r.peer;
        this.publish(rec);
      }
    }
  }
}

function pathMatches(r: FailureReport, from: NodeId, to: NodeId): boolean {
  return (r.subject === from && r.peer === to) || (r.subject === to && r.peer === from);
}
