import { describe, expect, it } from "vitest";
import { type DurableHandlers, KenCore, type KenOutput } from "../../src/durable/ken-core.ts";
import { parseKen } from "../../src/durable/messages.ts";
import { VolatileStore } from "../../src/durable/store.ts";

interface Counter {
  seen: number[];
}
/** Appends each message's number to its state and forwards it to "c". */
const relay: DurableHandlers<Counter> = {
  initial: () => ({ seen: [] }),
  onMessage(ctx, _from, m) {
    ctx.state.seen.push(m as number);
    ctx.send("c", m);
    ctx.output(() => outputs.push(m as number));
  },
};
let outputs: number[] = [];

const msg = (s: number, b: unknown = s) => ({ p: "ken" as const, t: "m" as const, s, b });
const sends = (outs: KenOutput[]) =>
  outs
    .filter((o): o is Extract<KenOutput, { type: "send" }> => o.type === "send")
    .map((o) => [o.to, o.frame]);

/** Run one batch through a store, like DurableProcess does. */
function turn<S>(core: KenCore<S>, store: VolatileStore, now = 0): KenOutput[] {
  const b = core.runTurns(1024);
  if (!b) return [];
  store.commit(b.writes);
  return core.committed(now);
}

describe("KenCore", () => {
  it("a turn's messages, acknowledgement and outputs leave only after its batch is committed", () => {
    outputs = [];
    const store = new VolatileStore();
    const core = new KenCore("b", relay, store.load());
    expect(core.receive(0, "a", msg(1))).toEqual([]); // no ack yet: nothing is durable
    const b = core.runTurns(10)!;
    expect(b.turns).toBe(1);
    expect(outputs).toEqual([]);
    store.commit(b.writes);
    const out = core.committed(0);
    expect(sends(out)).toEqual([
      ["c", { p: "ken", t: "m", s: 1, b: 1 }],
      ["a", { p: "ken", t: "a", u: 1 }],
    ]);
    for (const o of out) if (o.type === "output") o.fn();
    expect(outputs).toEqual([1]);
  });

  it("a turn that sends undefined or leaves an unstorable state fails alone; later turns run", () => {
    const errors: string[] = [];
    const bad: DurableHandlers<{ n: number; f?: unknown }> = {
      initial: () => ({ n: 0 }),
      onMessage(ctx, _from, m) {
        if (m === "undefined") ctx.send("c", undefined);
        else if (m === "function") ctx.state = { n: 99, f: () => 1 };
        else ctx.state.n++;
      },
    };
    const store = new VolatileStore();
    const core = new KenCore("b", bad, store.load(), {}, (e) => errors.push(String((e as Error).message)));
    core.receive(0, "a", msg(1, "undefined"));
    core.receive(0, "a", msg(2, "function"));
    core.receive(0, "a", msg(3, "count"));
    turn(core, store);
    expect(errors).toHaveLength(2);
    expect(errors[0]).toMatch(/cannot be undefined/);
    const restarted = new KenCore("b", bad, store.load());
    expect((restarted as unknown as { state: { n: number } }).state).toEqual({ n: 1 });
  });

  it("an acknowledgement sends only what it brings into the window, and stops retransmission when all is acknowledged", () => {
    const store = new VolatileStore();
    const core = new KenCore("b", relay, store.load(), { window: 4 });
    for (let i = 1; i <= 6; i++) core.receive(0, "a", msg(i));
    const first = sends(turn(core, store)).filter(([to]) => to === "c");
    expect(first.map(([, f]) => (f as { s: number }).s)).toEqual([1, 2, 3, 4]); // the window
    const ack2 = sends(core.receive(1, "c", { p: "ken", t: "a", u: 2 }));
    expect(ack2.map(([, f]) => (f as { s: number }).s)).toEqual([5, 6]); // not 3 and 4 again
    core.receive(2, "c", { p: "ken", t: "a", u: 6 });
    expect(sends(core.tick(1_000_000))).toEqual([]); // nothing outstanding: nothing to resend
  });

  it("drops duplicates (acknowledging again), buffers out-of-order messages, applies each once in order", () => {
    const store = new VolatileStore();
    const core = new KenCore("b", relay, store.load());
    core.receive(0, "a", msg(2));
    core.receive(0, "a", msg(3));
    expect(core.runTurns(10)).toBeUndefined(); // 1 is missing: nothing to run
    core.receive(0, "a", msg(1));
    turn(core, store);
    expect(core.current.seen).toEqual([1, 2, 3]);
    expect(sends(core.receive(0, "a", msg(2)))).toEqual([["a", { p: "ken", t: "a", u: 3 }]]);
    expect(core.stats.duplicates).toBe(1);
    turn(core, store);
    expect(core.current.seen).toEqual([1, 2, 3]);
  });

  it("after a restart from the store: the same state, and every unacknowledged message is sent again", () => {
    const store = new VolatileStore();
    const core = new KenCore("b", relay, store.load());
    for (const s of [1, 2, 3]) core.receive(0, "a", msg(s));
    turn(core, store);
    core.receive(1, "c", { p: "ken", t: "a", u: 1 });
    turn(core, store); // writes the deletion of the acknowledged entry
    const again = new KenCore("b", relay, store.load());
    expect(again.current.seen).toEqual([1, 2, 3]);
    expect(sends(again.start(5))).toEqual([
      ["c", { p: "ken", t: "m", s: 2, b: 2 }],
      ["c", { p: "ken", t: "m", s: 3, b: 3 }],
    ]);
    // And it still knows what it received: a resent message 3 is a duplicate.
    expect(sends(again.receive(6, "a", msg(3)))).toEqual([["a", { p: "ken", t: "a", u: 3 }]]);
  });

  it("a batch not committed before a crash leaves no trace: the input comes again and runs once", () => {
    const store = new VolatileStore();
    const core = new KenCore("b", relay, store.load());
    core.receive(0, "a", msg(1));
    core.runTurns(10); // crash before the commit
    const again = new KenCore("b", relay, store.load());
    expect(again.current.seen).toEqual([]);
    again.receive(1, "a", msg(1));
    turn(again, store);
    expect(again.current.seen).toEqual([1]);
  });

  it("retransmits with backoff until acknowledged, within the window", () => {
    const store = new VolatileStore();
    const core = new KenCore("b", relay, store.load(), {
      window: 2,
      retransmitMinMs: 10,
      retransmitMaxMs: 40,
    });
    for (const s of [1, 2, 3]) core.receive(0, "a", msg(s));
    const first = sends(turn(core, store)).filter(([to]) => to === "c");
    expect(first.map(([, f]) => (f as { s: number }).s)).toEqual([1, 2]); // the window is 2
    expect(core.tick(5)).toEqual([]);
    expect(sends(core.tick(10)).length).toBe(2);
    expect(core.tick(25)).toEqual([]); // backoff doubled to 20
    expect(sends(core.tick(30)).length).toBe(2);
    const after = sends(core.receive(31, "c", { p: "ken", t: "a", u: 2 }));
    expect(after).toEqual([["c", { p: "ken", t: "m", s: 3, b: 3 }]]);
    // An acknowledgement of what never left is clamped.
    core.receive(32, "c", { p: "ken", t: "a", u: 99 });
    expect(core.unacked()).toEqual(new Map());
  });

  it("a handler that throws is rolled back; its input counts as done", () => {
    const store = new VolatileStore();
    const errors: string[] = [];
    const core = new KenCore<Counter>(
      "b",
      {
        initial: () => ({ seen: [] }),
        onMessage(ctx, _f, m) {
          ctx.state.seen.push(m as number);
          ctx.send("c", m);
          if (m === 2) throw new Error("boom");
        },
      },
      store.load(),
      {},
      (_e, t) => errors.push(t),
    );
    for (const s of [1, 2, 3]) core.receive(0, "a", msg(s));
    const out = sends(turn(core, store));
    expect(core.current.seen).toEqual([1, 3]);
    expect(out.filter(([to]) => to === "c").map(([, f]) => (f as { b: number }).b)).toEqual([1, 3]);
    expect(errors).toEqual(["message 2 from a"]);
    expect(core.stats.failedTurns).toBe(1);
  });

  it("retire(peer): its unacknowledged messages go to onChannelError, typed, and so do later sends", () => {
    const store = new VolatileStore();
    const errors: Array<{ code: string; peer: string; undelivered: unknown[] }> = [];
    const core = new KenCore<Counter>(
      "b",
      {
        ...relay,
        onChannelError(_ctx, e) {
          errors.push({ code: e.code, peer: e.peer, undelivered: e.undelivered });
        },
      },
      store.load(),
    );
    for (const s of [1, 2]) core.receive(0, "a", msg(s));
    turn(core, store);
    core.retire("c", "host crashed (certain)");
    turn(core, store);
    expect(errors).toEqual([{ code: "FL_CHANNEL_GAVE_UP", peer: "c", undelivered: [1, 2] }]);
    core.receive(1, "a", msg(3));
    turn(core, store);
    turn(core, store);
    expect(errors[1]).toMatchObject({ peer: "c", undelivered: [3] });
    expect(core.tick(10_000)).toEqual([]);
    // The retirement is durable.
    expect(new KenCore("b", relay, store.load()).isRetired("c")).toBe(true);
  });

  it("rejects malformed channel frames", () => {
    for (const bad of [
      { p: "ken", t: "m", s: 0, b: 1 },
      { p: "ken", t: "m", s: 1.5, b: 1 },
      { p: "ken", t: "m", s: 1 },
      { p: "ken", t: "a", u: -1 },
      { p: "ken", t: "x" },
    ])
      expect(parseKen(bad)).toBeUndefined();
    expect(parseKen({ p: "ken", t: "a", u: 0 })).toBeDefined();
  });
});
