import { describe, expect, it } from "vitest";
import { Monitor } from "../../src/detect/monitor.ts";
import { PathDetector } from "../../src/detect/path-detector.ts";
import type { FailureReport } from "../../src/detect/report.ts";
import type { SwimNode } from "../../src/membership/swim-node.ts";
import type { Transport } from "../../src/net/transport.ts";
import { Emitter } from "../../src/runtime/emitter.ts";
import { VirtualClock } from "../../src/runtime/virtual-clock.ts";

/** A PathDetector fed probe outcomes by hand, on virtual time: the path evidence exactly as SWIM
 *  would emit it, so each rule can be checked against the sequence a real network produced. */
function rig() {
  const clock = new VirtualClock();
  const swim = Object.assign(
    new Emitter<{
      path: [string, boolean, number | undefined];
      member: [{ id: string; status: string }];
    }>(),
    // n3 and agent:h3 share host h3 (one network path).
    { core: { member: (id: string) => ({ id, host: id.endsWith("3") ? "h3" : id }) } },
  );
  const refreshed: string[] = [];
  const transport = Object.assign(new Emitter<{ integrity: [unknown] }>(), {
    refresh: (peer: string) => refreshed.push(peer),
  });
  const monitor = new Monitor();
  const reports: FailureReport[] = [];
  const recovered: string[] = [];
  monitor.subscribe({}, (r) => {
    if (r.type === "failure") reports.push(r);
    else recovered.push(r.kind);
  });
  const d = new PathDetector({
    id: "n1",
    swim: swim as unknown as SwimNode,
    transport: transport as unknown as Transport,
    monitor,
    clock,
  });
  d.start();
  /** One probe of n3 every `everyMs`: answered directly in `rtt` ms, or (rtt undefined) only
   *  through a relay. */
  const probe = (direct: boolean, rtt?: number, everyMs = 500, peer = "n3") => {
    clock.advance(everyMs);
    swim.emit("path", peer, direct, direct ? rtt : undefined);
  };
  /** A frame from `peer` failed its integrity check. */
  const damaged = (peer = "n3") => transport.emit("integrity", { peer, reason: "bad-mac", at: clock.now() });
  return { probe, damaged, reports, recovered, refreshed, stop: () => d.stop() };
}

describe("PathDetector", () => {
  it("probes failing while damaged frames arrive are no route failure: the route carries packets", () => {
    // What the lab saw: a relay flipping bits on n1<->n3; connections keep dying, so probes fail,
    // but fewer than corruptAfter damaged frames had reached this side when five had failed.
    const { probe, damaged, reports, stop } = rig();
    for (let i = 0; i < 5; i++) probe(true, 1.2);
    probe(false);
    damaged();
    for (let i = 0; i < 8; i++) probe(false);
    expect(reports.map((r) => r.kind)).toEqual([]);
    // Two more damaged frames: corruption, and still nothing about the route.
    damaged();
    damaged();
    for (let i = 0; i < 8; i++) probe(false);
    expect(reports.map((r) => r.kind)).toEqual(["corruption"]);
    stop();
  });

  it("a route failure without damaged frames is reported, and a damaged frame withdraws it", () => {
    const { probe, damaged, reports, recovered, stop } = rig();
    for (let i = 0; i < 5; i++) probe(true, 1.2);
    for (let i = 0; i < 5; i++) probe(false);
    expect(reports.map((r) => r.kind)).toEqual(["route-failure"]);
    damaged();
    expect(recovered).toEqual(["route-failure"]);
    for (let i = 0; i < 5; i++) probe(false);
    expect(reports.map((r) => r.kind)).toEqual(["route-failure"]);
    // The path stays down and nothing more arrives, damaged or not: a failed route after all.
    for (let i = 0; i < 60; i++) probe(false);
    expect(reports.map((r) => r.kind)).toEqual(["route-failure", "route-failure"]);
    stop();
  });

  it("asks the transport for a fresh connection once the direct path failed twice in a row, not on one lost probe", () => {
    const { probe, refreshed, stop } = rig();
    for (let i = 0; i < 3; i++) probe(true, 1.2);
    probe(false); // a lost ping or ack
    probe(true, 1.2);
    expect(refreshed).toEqual([]);
    probe(false);
    probe(false); // twice in a row: the connection may be stuck in retransmission backoff
    expect(refreshed).toEqual(["n3"]);
    probe(false); // still down: asked again (the transport limits how often it dials)
    expect(refreshed).toEqual(["n3", "n3"]);
    stop();
  });

  it("a path whose round trips climb far above its baseline over a steady run is congestion", () => {
    const { probe, reports, stop } = rig();
    for (let i = 0; i < 20; i++) probe(true, 1.2);
    for (let i = 0; i < 5; i++) probe(true, 150);
    expect(reports.map((r) => r.kind)).toEqual(["congestion"]);
    stop();
  });

  it("a flapping path whose answers come late after each outage (TCP retransmissions) is route instability, never congestion", () => {
    // What the lab saw: DROP for 1.5 s every 3.5 s; after each outage the queued probes and their
    // answers arrive with TCP's retransmission backoff, so runs of direct answers are slow.
    const { probe, reports, stop } = rig();
    for (let i = 0; i < 20; i++) probe(true, 1.2);
    for (let cycle = 0; cycle < 12; cycle++) {
      probe(false);
      probe(false);
      probe(false);
      for (const rtt of [380, 250, 120, 91, 60, 40]) probe(true, rtt, 300);
    }
    const kinds = new Set(reports.map((r) => r.kind));
    expect(kinds.has("route-instability")).toBe(true);
    expect(kinds.has("congestion")).toBe(false);
    stop();
  });

  it("a backlog that drains between slow answers (some answer at the baseline) is not congestion", () => {
    const { probe, reports, stop } = rig();
    for (let i = 0; i < 20; i++) probe(true, 1.2);
    for (let i = 0; i < 40; i++) probe(true, [300, 120, 1.5, 90, 2][i % 5]!, 1000);
    expect(reports).toEqual([]);
    stop();
  });

  it("the path to a host flaps as a whole: changes on the path to another member of the host hold back congestion", () => {
    // n3's own probes happen to land between outages, slow behind TCP's retransmissions; the
    // outages show on the probes of agent:h3, on the same host.
    const { probe, reports, stop } = rig();
    for (let i = 0; i < 20; i++) {
      probe(true, 1.2);
      probe(true, 1.2, 0, "agent:h3");
    }
    for (let cycle = 0; cycle < 20; cycle++) {
      probe(false, undefined, 1000, "agent:h3");
      probe(true, 150, 1000);
      probe(true, 60, 1000, "agent:h3");
      probe(true, 120, 1000);
    }
    expect(reports.filter((r) => r.kind === "congestion")).toEqual([]);
    stop();
  });

  it("round trips to every member of a host are samples of one path: together they show congestion sooner", () => {
    const { probe, reports, stop } = rig();
    for (let i = 0; i < 20; i++) probe(true, 1.2, 500, i % 2 ? "n3" : "agent:h3");
    probe(true, 150, 2000, "n3");
    probe(true, 140, 2000, "agent:h3");
    probe(true, 160, 2000, "n3");
    probe(true, 150, 2000, "agent:h3");
    expect(reports).toEqual([]);
    probe(true, 155, 2000, "n3");
    expect(reports.map((r) => `${r.kind} ${r.subject}`)).toEqual(["congestion n3"]);
    stop();
  });

  it("congestion with an occasional lost probe is still reported once the path has settled", () => {
    const { probe, reports, stop } = rig();
    for (let i = 0; i < 20; i++) probe(true, 1.2);
    for (let i = 0; i < 4; i++) probe(true, 150);
    probe(false); // a probe lost in the queue
    for (let i = 0; i < 30; i++) probe(true, 150);
    expect(reports.map((r) => r.kind)).toEqual(["congestion"]);
    stop();
  });
});
