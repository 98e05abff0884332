import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { MvccStore } from "../../src/coord/mvcc.ts";
import type { Command, KeyValue, WatchEvent } from "../../src/coord/types.ts";
import { decode, encode } from "../../src/runtime/codec.ts";

const keys = ["a", "ab", "b", "c"];
const cmdArb: fc.Arbitrary<Command> = fc.oneof(
  fc.record({
    c: fc.constant("put" as const),
    req: fc.record({ key: fc.constantFrom(...keys), value: fc.string({ maxLength: 3 }) }),
  }),
  fc.record({
    c: fc.constant("del" as const),
    req: fc.oneof(
      fc.record({ key: fc.constantFrom(...keys) }),
      fc.record({ key: fc.constant("a"), range_end: fc.constant("b") }),
    ),
  }),
  fc.record({
    c: fc.constant("txn" as const),
    req: fc.record({
      compare: fc.array(
        fc.record({
          result: fc.constantFrom(0, 1, 2, 3),
          target: fc.constant(0),
          key: fc.constantFrom(...keys),
          version: fc.integer({ min: 0, max: 3 }),
        }),
        { maxLength: 2 },
      ),
      success: fc.array(
        fc.record({ request_put: fc.record({ key: fc.constantFrom(...keys), value: fc.constant("s") }) }),
        { maxLength: 2 },
      ),
      failure: fc.array(fc.record({ request_delete_range: fc.record({ key: fc.constantFrom(...keys) }) }), {
        maxLength: 1,
      }),
    }),
  }),
);

describe("MvccStore", () => {
  it("agrees with a simple model at every revision, and its events replay every change", () => {
    fc.assert(
      fc.property(fc.array(cmdArb, { maxLength: 40 }), (cmds) => {
        const s = new MvccStore();
        const events: Array<[number, WatchEvent[]]> = [];
        s.onEvents = (rev, es) => events.push([rev, es]);
        // The model: the whole key → value map at each revision.
        const history = new Map<number, Map<string, string>>([[1, new Map()]]);
        let model = new Map<string, string>();
        for (const cmd of cmds) {
          const before = s.revision;
          const r = s.apply(cmd);
          if (!r.ok) continue;
          const next = new Map(model);
          if (cmd.c === "put") next.set(cmd.req.key, cmd.req.value);
          if (cmd.c === "del")
            for (const k of keys)
              if (k === cmd.req.key || (cmd.req.range_end && k >= cmd.req.key && k < cmd.req.range_end))
                next.delete(k);
          if (cmd.c === "txn") {
            const ok = (r.value as { succeeded: boolean }).succeeded;
            for (const op of ok ? cmd.req.success : cmd.req.failure) {
              if (op.request_put) next.set(op.request_put.key, op.request_put.value);
              if (op.request_delete_range) next.delete(op.request_delete_range.key);
            }
          }
          const changed = events.length && events.at(-1)![0] === s.revision && s.revision !== before;
          expect(s.revision === before + 1 || s.revision === before).toBe(true);
          if (changed) history.set(s.revision, next);
          model = next;
        }
        // Every revision reads as the model did then.
        for (const [rev, m] of history) {
          const r = s.range({ key: "\u0000", range_end: "\u0000", revision: rev });
          expect(r.ok).toBe(true);
          const got = Object.fromEntries((r.ok ? r.value.kvs : []).map((kv: KeyValue) => [kv.key, kv.value]));
          expect(got).toEqual(Object.fromEntries([...m].sort()));
        }
        // Replaying the events from revision 2 rebuilds the current map.
        const replay = s.eventsSince(2, "\u0000", "\u0000", false);
        expect(Array.isArray(replay)).toBe(true);
        const rebuilt = new Map<string, string>();
        for (const e of replay as WatchEvent[]) {
          if (e.type === "put") rebuilt.set(e.kv.key, e.kv.value);
          else rebuilt.delete(e.kv.key);
        }
        expect(Object.fromEntries([...rebuilt].sort())).toEqual(Object.fromEntries([...model].sort()));
        // A snapshot image restores to the same store.
        const t = new MvccStore();
        t.restore(structuredClone(s.image()));
        expect(t.range({ key: "\u0000", range_end: "\u0000" })).toEqual(
          s.range({ key: "\u0000", range_end: "\u0000" }),
        );
      }),
      { numRuns: 300 },
    );
  });

  it("versions, create and mod revisions, leases, compaction, as etcd keeps them", () => {
    const s = new MvccStore();
    s.apply({ c: "put", req: { key: "k", value: "1" } });
    s.apply({ c: "put", req: { key: "k", value: "2" } });
    expect(s.get("k")).toMatchObject({ create_revision: 2, mod_revision: 3, version: 2, value: "2" });
    expect(s.apply({ c: "put", req: { key: "x", value: "v", lease: 99 } })).toMatchObject({
      ok: false,
      error: { message: "etcdserver: requested lease not found" },
    });
    s.apply({ c: "lease-grant", id: 99, ttl: 5 });
    s.apply({ c: "put", req: { key: "e1", value: "v", lease: 99 } });
    s.apply({ c: "put", req: { key: "e2", value: "v", lease: 99 } });
    const rev = s.revision;
    s.apply({ c: "lease-revoke", id: 99 });
    expect(s.revision).toBe(rev + 1); // both keys go in one revision
    expect(s.get("e1")).toBeUndefined();
    expect(
      s.range({ key: "e", range_end: "f", revision: rev }).ok &&
        s.range({ key: "e", range_end: "f", revision: rev }),
    ).toMatchObject({ value: { count: 2 } });
    expect(s.apply({ c: "compact", revision: rev + 1 }).ok).toBe(true);
    expect(s.range({ key: "e", range_end: "f", revision: rev })).toMatchObject({
      ok: false,
      error: { message: "etcdserver: mvcc: required revision has been compacted" },
    });
    expect(s.range({ key: "k" })).toMatchObject({ ok: true, value: { count: 1 } });
    expect(s.range({ key: "k", revision: s.revision + 1 })).toMatchObject({
      ok: false,
      error: { message: "etcdserver: mvcc: required revision is a future revision" },
    });
    // A transaction writing one key twice is refused, whole.
    const r = s.apply({
      c: "txn",
      req: {
        compare: [],
        success: [{ request_put: { key: "d", value: "1" } }, { request_put: { key: "d", value: "2" } }],
        failure: [],
      },
    });
    expect(r).toMatchObject({
      ok: false,
      error: { message: "etcdserver: duplicate key given in txn request" },
    });
    expect(s.get("d")).toBeUndefined();
  });

  it("a snapshot written a step at a time is the state of the moment it began, whatever is applied meanwhile", () => {
    const more: fc.Arbitrary<Command> = fc.oneof(
      cmdArb,
      fc.record({ c: fc.constant("compact" as const), revision: fc.integer({ min: 1, max: 60 }) }),
      fc.record({
        c: fc.constant("lease-grant" as const),
        id: fc.integer({ min: 1, max: 3 }),
        ttl: fc.constant(5),
      }),
      fc.record({
        c: fc.constant("put" as const),
        req: fc.record({
          key: fc.constantFrom(...keys),
          value: fc.constant("l"),
          lease: fc.integer({ min: 1, max: 3 }),
        }),
      }),
      fc.record({ c: fc.constant("lease-revoke" as const), id: fc.integer({ min: 1, max: 3 }) }),
    );
    fc.assert(
      fc.property(
        fc.array(more, { maxLength: 40 }),
        fc.array(more, { maxLength: 40 }),
        fc.integer({ min: 1, max: 5 }),
        (before, during, perStep) => {
          const s = new MvccStore();
          for (const c of before) s.apply(c);
          const then = encode(s.image());
          const w = s.snapshotWriter(perStep);
          let out: Uint8Array | undefined;
          // Interleave: a step, then a command applied to the live store.
          for (let i = 0; !out; i++) {
            out = w.step();
            if (i < during.length) s.apply(during[i]!);
            expect(i).toBeLessThan(1000);
          }
          expect(decode(out)).toEqual(decode(then));
          const t = new MvccStore();
          t.restore(decode(out) as ReturnType<MvccStore["image"]>);
          expect(t.image()).toEqual(decode(then));
        },
      ),
      { numRuns: 300 },
    );
  });
});
