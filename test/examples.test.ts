import { spawnSync } from "node:child_process";
import { describe, expect, it } from "vitest";
import { ROOT } from "./fixtures/processes.ts";

const run = (file: string, ...args: string[]) =>
  spawnSync(process.execPath, ["--import", "tsx", file, ...args], {
    cwd: ROOT,
    encoding: "utf8",
    timeout: 30_000,
  });

describe("examples run", () => {
  it("transport/two-nodes", () => {
    const r = run("examples/transport/two-nodes.ts");
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/alice sees bob: connected/);
    expect(r.stdout).toMatch(/alice got \{"pong":1\} from bob/);
    expect(r.stdout).toMatch(/alice sees bob: closed/);
  });

  it("durable/pipeline: three processes, every transfer applied once, in order", () => {
    const r = run("examples/durable/pipeline.ts", "--transfers", "3000", "--no-chaos");
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/3000 transfers, 0 processes killed/);
    expect(r.stdout).toMatch(/exact: every transfer applied once, in order/);
  });

  it("fuse/three: kill one member, the other two are told why; or one signals, all three are told", () => {
    const kill = run("examples/fuse/three.ts");
    expect(kill.status).toBe(0);
    expect(kill.stdout).toMatch(/n3 was SIGKILLed/);
    expect(kill.stdout).toMatch(/n1 was told after \d+ ms: .*"member":"n3","kind":"process-exit"/);
    expect(kill.stdout).toMatch(/n2 was told after \d+ ms: .*"member":"n3","kind":"process-exit"/);
    const signal = run("examples/fuse/three.ts", "--signal");
    expect(signal.status).toBe(0);
    for (const id of ["n1", "n2", "n3"])
      expect(signal.stdout).toMatch(new RegExp(`${id} was told after \\d+ ms: .*"type":"signal","by":"n2"`));
  });

  it("coord/session: an owner's SIGKILL removes its key at once; a watch and writes carry on past a leader's SIGKILL", () => {
    const r = run("examples/coord/session.ts");
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/etcd3 wrote hello=world/);
    expect(r.stdout).toMatch(/the watch saw workers\/w1 deleted [\d.]+ ms after the SIGKILL/);
    expect(r.stdout).toMatch(/the leader, c\d, was SIGKILLed/);
    expect(r.stdout).toMatch(/the watch carried on across the failover: it saw workers\/w2 put/);
  });

  it("coord/embedded: a member hosted in the application's process takes a lock; another member's watch sees it", () => {
    const r = run("examples/coord/embedded.ts");
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/leader: c\d; etcd clients may use 127\.0\.0\.1:\d+/);
    expect(r.stdout).toMatch(/lock taken: true, fencing token \(its revision\): \d+/);
    expect(r.stdout).toMatch(/watch on c3: put locks\/report[\s\S]*watch on c3: delete locks\/report/);
  });

  it("simulation/partition: no cross-side traffic while partitioned, and the same seed replays", () => {
    const a = run("examples/simulation/partition.ts", "3");
    const b = run("examples/simulation/partition.ts", "3");
    expect(a.status).toBe(0);
    expect(a.stdout).toMatch(/partitioned for 3 s: 0 new cross-side pongs/);
    expect(a.stdout).toMatch(/healed for 2 s: [1-9]\d* new cross-side pongs/);
    expect(a.stdout).toBe(b.stdout);
  });
});
