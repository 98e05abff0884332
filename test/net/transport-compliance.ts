import { afterEach, describe, expect, it } from "vitest";
import type { NodeId, Transport } from "../../src/net/transport.ts";
import { isFaultlineError } from "../../src/runtime/errors.ts";

/** What the shared suite needs from each transport implementation. */
export interface TransportHarness {
  /** Make started transports with these ids, all able to reach each other. */
  make(ids: NodeId[]): Promise<Transport[]>;
  /** Let time pass until `cond` holds (real time for TCP, virtual time for the simulator). */
  waitFor(cond: () => boolean, what: string, ms?: number): Promise<void>;
  cleanup(): Promise<void>;
}

/** The Transport contract, run against every implementation (as js-libp2p does for its transports). */
export function transportCompliance(name: string, harness: () => TransportHarness): void {
  describe(`Transport contract: ${name}`, () => {
    let h: TransportHarness;
    afterEach(async () => {
      await h?.cleanup();
    });

    it("delivers a message with the sender's id, both ways", async () => {
      h = harness();
      const [a, b] = await h.make(["a", "b"]);
      const gotB: Array<[string, unknown]> = [];
      const gotA: Array<[string, unknown]> = [];
      b!.on("message", (from, m) => gotB.push([from, m]));
      a!.on("message", (from, m) => gotA.push([from, m]));
      expect(a!.send("b", { hello: "b", n: 1 })).toBe(true);
      b!.send("a", ["x", 2, null]);
      await h.waitFor(() => gotB.length === 1 && gotA.length === 1, "one message each way");
      expect(gotB[0]).toEqual(["a", { hello: "b", n: 1 }]);
      expect(gotA[0]).toEqual(["b", ["x", 2, null]]);
    });

    it("keeps per-peer order on a healthy link", async () => {
      h = harness();
      const [a, b] = await h.make(["a", "b"]);
      const got: number[] = [];
      b!.on("message", (_f, m) => got.push((m as { i: number }).i));
      for (let i = 0; i < 500; i++) a!.send("b", { i });
      await h.waitFor(() => got.length === 500, "500 messages");
      expect(got).toEqual(Array.from({ length: 500 }, (_, i) => i));
    });

    it("fans out among several nodes", async () => {
      h = harness();
      const ids = ["n1", "n2", "n3", "n4", "n5"];
      const ts = await h.make(ids);
      const seen = new Map<string, Set<string>>();
      for (const t of ts) {
        seen.set(t.id, new Set());
        t.on("message", (from) => seen.get(t.id)!.add(from));
      }
      for (const t of ts) for (const to of ids) if (to !== t.id) t.send(to, { from: t.id });
      await h.waitFor(() => [...seen.values()].every((s) => s.size === 4), "all-to-all");
      for (const [id, s] of seen) expect([...s].sort()).toEqual(ids.filter((x) => x !== id));
    });

    it("refuses an unknown peer with FL_UNKNOWN_PEER", async () => {
      h = harness();
      const [a] = await h.make(["a", "b"]);
      let err: unknown;
      try {
        a!.send("nobody", {});
      } catch (e) {
        err = e;
      }
      expect(isFaultlineError(err, "FL_UNKNOWN_PEER")).toBe(true);
      expect((err as Error).message).toMatch(/nobody/);
    });

    it("a throwing listener does not stop delivery to the others", async () => {
      h = harness();
      const [a, b] = await h.make(["a", "b"]);
      let n = 0;
      b!.on("message", () => {
        throw new Error("listener bug");
      });
      b!.on("message", () => n++);
      a!.send("b", 1);
      a!.send("b", 2);
      await h.waitFor(() => n === 2, "both messages");
    });

    it("counts what it sent and received", async () => {
      h = harness();
      const [a, b] = await h.make(["a", "b"]);
      let n = 0;
      b!.on("message", () => n++);
      for (let i = 0; i < 10; i++) a!.send("b", { i });
      await h.waitFor(() => n === 10, "10 messages");
      expect(a!.stats().sent).toBe(10);
      expect(b!.stats().received).toBe(10);
    });

    it("stop() is idempotent, and send after stop drops and counts", async () => {
      h = harness();
      const [a] = await h.make(["a", "b"]);
      await a!.stop();
      await a!.stop();
      expect(a!.send("b", {})).toBe(false);
      expect(a!.stats().dropped.stopped).toBe(1);
    });
  });
}
