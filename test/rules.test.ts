import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { ROOT } from "./fixtures/processes.ts";

/**
 * DESIGN.md rule 2: protocol code takes time and randomness from the injected Clock and Rng, so
 * that it runs, and replays, under the simulator. A line that must touch the real world says so
 * with a `real-io` comment.
 */
const PROTOCOL = [
  "src/membership",
  "src/detect",
  "src/durable",
  "src/sim",
  "src/consensus",
  "src/coord/member.ts",
  "src/coord/mvcc.ts",
  "src/agent/lease.ts",
  "src/net/sim-network.ts",
  "src/net/sim-link.ts",
  "src/net/sim-transport.ts",
];
const FORBIDDEN = /\b(Date\.now|performance\.now|setTimeout|setInterval|setImmediate|Math\.random)\(/;

function files(path: string): string[] {
  const full = join(ROOT, path);
  if (path.endsWith(".ts")) return [full];
  return readdirSync(full, { recursive: true, encoding: "utf8" })
    .filter((f) => f.endsWith(".ts"))
    .map((f) => join(full, f));
}

describe("house rules", () => {
  it("protocol code reads no real clock and no real randomness", () => {
    const offences: string[] = [];
    for (const p of PROTOCOL) {
      for (const f of files(p)) {
        readFileSync(f, "utf8")
          .split("\n")
          .forEach((line, i) => {
            const code = line.replace(/\/\/.*$/, "").replace(/^\s*\*.*$/, "");
            if (FORBIDDEN.test(code) && !line.includes("real-io"))
              offences.push(`${f.slice(ROOT.length)}:${i + 1}: ${line.trim()}`);
          });
      }
    }
    expect(offences).toEqual([]);
  });
});
