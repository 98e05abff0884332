import { execFileSync, spawnSync } from "node:child_process";
import { describe, expect, it } from "vitest";
import { ROOT } from "../fixtures/processes.ts";

const cli = (...args: string[]) =>
  spawnSync(process.execPath, ["--import", "tsx", "src/cli/main.ts", ...args], {
    cwd: ROOT,
    encoding: "utf8",
  });

describe("faultline sim", () => {
  it("replays a seed to the same trace hash", () => {
    const hash = (out: string) => /trace ([0-9a-f]{64})/.exec(out)?.[1];
    const a = cli("sim", "--seed", "9", "--duration", "10s");
    const b = cli("sim", "--seed", "9", "--duration", "10s");
    expect(a.status).toBe(0);
    expect(hash(a.stdout)).toBeDefined();
    expect(hash(a.stdout)).toBe(hash(b.stdout));
  });

  it("runs a swarm and says how many seeds failed", () => {
    const r = cli("sim", "--seeds", "50", "--duration", "5s");
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/swarm ping: 50 seeds, 0 failed/);
  });

  it("rejects bad options with a message a person can act on", () => {
    const r = cli("sim", "--seeds", "many");
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/--seeds: must be a whole number/);
    const s = cli("sim", "--scenario", "nope");
    expect(s.status).not.toBe(0);
    expect(s.stderr).toMatch(/unknown scenario "nope"/);
  });

  it("has --help everywhere", () => {
    for (const cmd of [[], ["sim"], ["up"], ["node"]]) {
      const out = execFileSync(process.execPath, ["--import", "tsx", "src/cli/main.ts", ...cmd, "--help"], {
        cwd: ROOT,
        encoding: "utf8",
      });
      expect(out).toMatch(/Usage: faultline/);
    }
  });
});
