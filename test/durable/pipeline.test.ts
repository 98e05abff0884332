import { describe, expect, it } from "vitest";
import { runPipeline } from "../../examples/durable/pipeline.ts";

describe("durable pipeline on real OS processes", () => {
  it("100,000 transfers through source → bank → audit while a random process is SIGKILLed every 30-300 ms: exact", async () => {
    // Kills come at a pace, not per transfer: the faster the machine, the fewer fit in the run.
    // Every 30-300 ms keeps more than 20 of them in the ~4 s a quiet machine needs.
    const r = await runPipeline({
      transfers: 100_000,
      chaos: true,
      killEveryMs: [30, 300],
      timeoutMs: 400_000,
    });
    expect(r.problems).toEqual([]);
    expect(r.ok).toBe(true);
    expect(r.audit.applied).toBe(100_000);
    expect(r.kills).toBeGreaterThan(20);
  }, 420_000);
});
