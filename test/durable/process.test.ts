import { describe, expect, it } from "vitest";
import { Monitor } from "../../src/detect/monitor.ts";
import type { FailureReport } from "../../src/detect/report.ts";
import type { ChannelError } from "../../src/durable/ken-core.ts";
import { DurableProcess } from "../../src/durable/process.ts";
import { SimDurableStore } from "../../src/durable/store.ts";
import { Simulation } from "../../src/sim/simulation.ts";

const failure = (
  subject: string,
  kind: FailureReport["kind"],
  certainty: FailureReport["certainty"],
): FailureReport => ({
  type: "failure",
  subject,
  kind,
  certainty,
  detectedAt: 0,
  since: 0,
  evidence: [],
  detector: "test",
});

/** Two durable processes in simulation; "b" is down, so a's messages to it stay unacknowledged. */
function pair() {
  const monitor = new Monitor();
  const errors: ChannelError[] = [];
  const sim = new Simulation<DurableProcess<{ n: number }>>({
    seed: 1,
    nodes: ["a", "b"],
    create: (ctx) =>
      new DurableProcess<{ n: number }>({
        id: ctx.id,
        transport: ctx.transport,
        clock: ctx.clock,
        store: new SimDurableStore(ctx.store),
        ...(ctx.id === "a" ? { monitor } : {}),
        handlers: {
          initial: () => ({ n: 0 }),
          onInput(c) {
            c.state.n++;
            c.send("b", c.state.n);
          },
          onMessage(c) {
            c.state.n++;
          },
          onChannelError(_c, e) {
            errors.push(e);
          },
        },
      }),
  }).start();
  sim.crash("b");
  const a = sim.node("a")!;
  for (let i = 0; i < 3; i++) a.submit("go");
  sim.runFor(1000);
  return { sim, a, monitor, errors };
}

describe("DurableProcess with detection", () => {
  it("a peer reported process-exit keeps its messages (it will come back); they arrive once it does", () => {
    const { sim, a, monitor, errors } = pair();
    monitor.publish(failure("b", "process-exit", "certain"));
    sim.runFor(1000);
    expect(errors).toEqual([]);
    expect(a.unacked().get("b")).toBe(3);
    sim.restart("b");
    sim.runFor(5000);
    expect(a.unacked().get("b")).toBeUndefined();
    expect(sim.node("b")!.state.n).toBe(3);
  });

  it("a peer whose host certainly crashed: the channel gives up with a typed error holding what was not delivered", () => {
    const { sim, a, monitor, errors } = pair();
    monitor.publish(failure("b", "host-crash", "suspected"));
    sim.runFor(1000);
    expect(errors).toEqual([]); // suspected is not enough
    monitor.publish(failure("b", "host-crash", "certain"));
    sim.runFor(1000);
    expect(errors).toEqual([
      {
        code: "FL_CHANNEL_GAVE_UP",
        peer: "b",
        reason: "host of b crashed (certain)",
        undelivered: [1, 2, 3],
      },
    ]);
    expect(a.unacked().get("b")).toBeUndefined();
  });

  it("malformed channel frames are dropped and counted; the process goes on", () => {
    const { sim, a } = pair();
    sim.restart("b");
    const tb = sim.transport("b");
    tb.send("a", { p: "ken", t: "a", u: -5 });
    tb.send("a", { p: "ken", t: "m", s: "one", b: 1 });
    tb.send("a", { p: "ken" });
    sim.runFor(5000);
    expect(a.stats.malformed).toBe(3);
    expect(sim.node("b")!.state.n).toBe(3);
  });
});
