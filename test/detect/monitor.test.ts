import { describe, expect, it } from "vitest";
import { Monitor } from "../../src/detect/monitor.ts";
import type { FailureReport } from "../../src/detect/report.ts";

const failure = (subject: string, certainty: "certain" | "suspected" = "suspected"): FailureReport => ({
  type: "failure",
  subject,
  kind: "process-exit",
  certainty,
  detectedAt: 1,
  since: 1,
  evidence: [{ source: "test", what: "x", at: 1 }],
  detector: "test",
});

describe("Monitor", () => {
  it("announces a failure of a new life (another boot) even while the old life's condition is current", () => {
    const m = new Monitor();
    const seen: string[] = [];
    m.subscribe({}, (r) => seen.push(`${r.type}:${r.subject}:${r.type === "failure" ? r.boot : ""}`));
    m.publish({ ...failure("a", "certain"), boot: "b1" });
    m.publish({ ...failure("a", "certain"), boot: "b1" }); // repeat: evidence only
    m.publish({ ...failure("a", "certain"), boot: "b2" }); // the next life died too: announced
    m.publish({ ...failure("a", "suspected"), boot: "b3" }); // and so on, whatever the certainty
    m.publish({ ...failure("a", "certain"), boot: "b2" }); // a lagging detector's old life: ignored
    m.publish({ ...failure("a", "certain") }); // an upgrade naming no life: about the current one
    expect(seen).toEqual(["failure:a:b1", "failure:a:b2", "failure:a:b3", "failure:a:b3"]);
    expect(m.status("a").reports[0]!.boot).toBe("b3");
  });

  it("announces a condition once, never downgrades certain, and clears it with recovered", () => {
    const m = new Monitor();
    const seen: string[] = [];
    m.subscribe({}, (r) => seen.push(`${r.type}:${r.subject}:${r.type === "failure" ? r.certainty : ""}`));
    m.publish(failure("a"));
    m.publish(failure("a")); // repeat: evidence only
    m.publish(failure("a", "certain")); // upgrade: announced
    m.publish(failure("a")); // downgrade: ignored
    expect(m.status("a").reports[0]!.certainty).toBe("certain");
    m.publish({
      type: "recovered",
      subject: "a",
      kind: "process-exit",
      detectedAt: 2,
      failedAt: 1,
      detector: "t",
    });
    m.publish({
      type: "recovered",
      subject: "a",
      kind: "process-exit",
      detectedAt: 3,
      failedAt: 1,
      detector: "t",
    });
    expect(seen).toEqual(["failure:a:suspected", "failure:a:certain", "recovered:a:"]);
    expect(m.status("a").state).toBe("ok");
  });

  it("filters by subject, kind and certainty; status of a path finds it from either end", () => {
    const m = new Monitor();
    const got: string[] = [];
    m.subscribe({ subject: ["b"], certainty: "certain" }, (r) => got.push(r.subject));
    m.publish(failure("a", "certain"));
    m.publish(failure("b"));
    m.publish(failure("b", "certain"));
    expect(got).toEqual(["b"]);
    m.publish({ ...failure("c"), kind: "route-failure", peer: "d" });
    expect(m.status("d", "c").state).toBe("failed");
    expect(m.status("c", "d").reports).toHaveLength(1);
  });

  it("watch() streams, ends on abort (also when already aborted), and serves concurrent next() calls", async () => {
    const m = new Monitor();
    const done = new AbortController();
    done.abort();
    const it0 = m.watch({}, { signal: done.signal })[Symbol.asyncIterator]();
    expect(await it0.next()).toEqual({ value: undefined, done: true });

    const ac = new AbortController();
    const it1 = m.watch({}, { signal: ac.signal })[Symbol.asyncIterator]();
    const p1 = it1.next();
    const p2 = it1.next();
    m.publish(failure("x"));
    m.publish(failure("y"));
    const got = await Promise.all([p1, p2]);
    expect(got.map((r) => (r.value as FailureReport).subject).sort()).toEqual(["x", "y"]);
    const p3 = it1.next();
    ac.abort();
    expect(await p3).toEqual({ value: undefined, done: true });
  });
});
