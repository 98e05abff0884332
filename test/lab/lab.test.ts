import { spawn, spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { cliBundle } from "../../bench/clusters.ts";
import { alive, cleanAll, labNamespaces, nsPids, PREFIX, STATE_DIR, whyNot } from "../../lab/netns.ts";
import { LAB_SWIM, runLab, SCENARIOS } from "../../lab/run.ts";
import { Processes, ROOT, waitFor } from "../fixtures/processes.ts";

// The lab needs root, iproute2 and iptables (.ci/run installs them); elsewhere it is skipped, and
// says why.
const why = whyNot();
if (why) console.warn(`lab tests skipped: ${why}`);

/** Everything the lab could leave behind: its namespaces, interfaces here, and its processes. */
function leftovers(pids: number[]): string[] {
  const found: string[] = labNamespaces().map((ns) => `namespace ${ns}`);
  const links = spawnSync("ip", ["-o", "link", "show"], { encoding: "utf8" }).stdout ?? "";
  for (const l of links.split("\n"))
    if (/: (vh\d+|fllab-\S*)[@:]/.test(l)) found.push(`interface ${l.split(":")[1]}`);
  for (const pid of pids) if (alive(pid)) found.push(`process ${pid}`);
  if (existsSync(STATE_DIR)) found.push(`state directory ${STATE_DIR}`);
  return found;
}

function recorded(): number[] {
  const f = join(STATE_DIR, "pids");
  return existsSync(f) ? readFileSync(f, "utf8").split("\n").filter(Boolean).map(Number) : [];
}

describe.skipIf(why !== undefined)("the real-network fault lab (network namespaces)", () => {
  const procs = new Processes();
  afterAll(async () => {
    await procs.killAll();
    cleanAll();
  });

  it(
    "classifies every scenario right (kind and subject), reports no healthy host, fails FUSE groups at every live member, and leaves nothing behind",
    async () => {
      const log: string[] = [];
      // Every process the run started (the state file goes with the clean-up: read it meanwhile).
      const pids = new Set<number>();
      const results = await runLab({
        bundle: await cliBundle(),
        trials: 1,
        windowMs: 60_000,
        graceMs: 4000,
        only: [],
        verbose: false,
        log: (l) => {
          log.push(l);
          for (const pid of recorded()) pids.add(pid);
        },
        ...LAB_SWIM,
      });
      const summary = log.join("\n");
      expect(results.map((r) => r.scenario)).toEqual(SCENARIOS.map((s) => s.name));
      for (const r of results) {
        const s = SCENARIOS.find((x) => x.name === r.scenario)!;
        expect(r.first?.kind, `${r.scenario}\n${summary}`).toBe(s.expect);
        expect(r.wrong, `${r.scenario}\n${summary}`).toEqual([]);
        // A FUSE group of every node fails at every member still running, within T, once.
        if (s.fuse) {
          expect(r.fuse?.told, `FUSE, ${r.scenario}\n${summary}`).toBe(r.fuse?.live.length);
          expect(r.fuse!.allMs!, `FUSE, ${r.scenario}`).toBeLessThanOrEqual(r.fuse!.boundMs);
          expect(r.fuse!.wrong, `FUSE, ${r.scenario}`).toEqual([]);
        }
      }
      expect(results.filter((r) => r.fuse).length).toBe(SCENARIOS.filter((s) => s.fuse).length);
      // The agent saw the exit: certain. Everything else the network alone cannot prove.
      expect(results.find((r) => r.scenario === "process crash")!.first!.certainty).toBe("certain");
      expect(pids.size).toBeGreaterThan(10);
      expect(leftovers([...pids])).toEqual([]);
    },
    15 * 60_000,
  );

  it("cleans up after Ctrl-C, and after a run killed outright (the next run, or --clean)", async () => {
    const lab = (args: string[]) => {
      const p = spawn(
        process.execPath,
        ["--import", "tsx", "lab/index.ts", "--trials", "3", "--only", "host freeze", ...args],
        { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] },
      );
      procs.track(p);
      return p;
    };
    // Midway: the network is up, every process started, a host frozen.
    const midway = () => labNamespaces().length === 6 && recorded().length >= 20;
    for (const how of ["SIGINT", "SIGKILL"] as const) {
      const p = lab([]);
      let out = "";
      p.stdout!.on("data", (d) => (out += d));
      p.stderr!.on("data", (d) => (out += d));
      await waitFor(midway, `the lab to be midway (${how})`, 120_000).catch((e) => {
        throw new Error(`${(e as Error).message}\n${out}`);
      });
      await waitFor(() => out.includes("host freeze #1"), "a first trial", 120_000);
      // Everything in the lab's namespaces, by the kernel's list, and what the run recorded.
      const pids = [...new Set([...recorded(), ...labNamespaces().flatMap((ns) => nsPids(ns))])];
      expect(labNamespaces().some((ns) => ns.startsWith(PREFIX))).toBe(true);
      p.kill(how);
      await Processes.exited(p);
      if (how === "SIGKILL") {
        // Killed outright, it could not clean up: what it left is still there...
        expect(leftovers(pids).length).toBeGreaterThan(0);
        // ...until the next run (or `npm run lab -- --clean`) removes it.
        const clean = spawnSync(process.execPath, ["--import", "tsx", "lab/index.ts", "--clean"], {
          cwd: ROOT,
          encoding: "utf8",
        });
        expect(clean.stdout).toMatch(/lab: removed \d+ process\(es\) and 6 namespace\(s\)/);
      }
      await waitFor(
        () => leftovers(pids).length === 0,
        `nothing left after ${how}: ${leftovers(pids).join(", ")}`,
        10_000,
      );
    }
  }, 600_000);
});
