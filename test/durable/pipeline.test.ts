import { describe, expect, it } from "vitest";
import { runPipeline } from "../../examples/durable/pipeline.ts";

describe("durable pipeline on real OS processes", () => {
  it("100,000 transfers through source → bank → audit while a random process is SIGKILLed every 50-500 ms: exact", async () => {
    const r = await runPipeline({ transfers: 100_000, chaos: true, timeoutMs: 400_000 });
    expect(r.problems).toEqual([]);
    expect(r.ok).toBe(true);
    expect(r.audit.applied).toBe(100_000);
    expect(r.kills).toBeGreaterThan(20);
  }, 420_000);
});
