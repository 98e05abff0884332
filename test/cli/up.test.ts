import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { createInterface } from "node:readline";
import { Etcd3 } from "etcd3";
import { afterEach, describe, expect, it } from "vitest";
import { Processes, pidAlive, ROOT, waitFor } from "../fixtures/processes.ts";

/** Runs `faultline up` in line mode and collects its output lines. */
function up(args: string[] = []) {
  const proc = spawn(process.execPath, ["--import", "tsx", "src/cli/main.ts", "up", "--no-tty", ...args], {
    cwd: ROOT,
    stdio: ["pipe", "pipe", "inherit"],
  });
  const lines: string[] = [];
  createInterface({ input: proc.stdout! }).on("line", (l) => lines.push(l));
  const pids = () =>
    lines.flatMap((l) => {
      const m = /\] n\d+ listening on .* \(pid (\d+)/.exec(l);
      return m ? [Number(m[1])] : [];
    });
  /** Every child's pid, the host agent's included. */
  const childPids = () =>
    lines.flatMap((l) => {
      const m = /listening on .* \(pid (\d+)/.exec(l);
      return m ? [Number(m[1])] : [];
    });
  const has = (re: RegExp) => lines.some((l) => re.test(l));
  /** waitFor that shows the supervisor's recent output when it times out. */
  const until = async (cond: () => boolean, what: string, ms = 10_000) => {
    try {
      await waitFor(cond, what, ms);
    } catch (e) {
      // The periodic view panel would fill the dump: show the events (log lines) only.
      const events = lines.filter((l) => /^\[\+[\d.]+s\] /.test(l) && !/\] (view \(|coordination:)/.test(l));
      throw new Error(
        `${(e as Error).message}\n--- faultline up's last events:\n${events.slice(-60).join("\n")}`,
      );
    }
  };
  return { proc, lines, pids, childPids, has, until };
}

describe("faultline up", () => {
  const procs = new Processes();
  const started: number[] = [];
  afterEach(async () => {
    await procs.killAll();
    for (const pid of started.splice(0)) if (pidAlive(pid)) process.kill(pid, "SIGKILL");
  }, 120_000);

  it("runs 5 node processes and a coordination service, shows what each sees, lets you kill and restart one, and stops them all", async () => {
    const u = up();
    procs.track(u.proc);
    await u.until(() => u.pids().length === 5, "5 nodes listening", 60_000);
    started.push(...u.childPids());
    await u.until(() => u.has(/^\s+n1 .*running\s+\|\s+·\s+\d+\.\d+ms/), "a view row with RTTs", 20_000);
    await u.until(() => u.has(/n1 admin endpoint 127\.0\.0\.1:\d+/), "n1's admin endpoint");
    const admin = /n1 admin endpoint (127\.0\.0\.1:\d+)/.exec(
      u.lines.find((l) => /n1 admin endpoint/.test(l))!,
    )![1]!;
    const watch = spawn(
      process.execPath,
      ["--import", "tsx", "src/cli/main.ts", "watch", "--admin", admin, "--certainty", "certain"],
      {
        cwd: ROOT,
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    procs.track(watch);
    const watched: string[] = [];
    let watching = false;
    createInterface({ input: watch.stdout! }).on("line", (l) => watched.push(l));
    createInterface({ input: watch.stderr! }).on("line", (l) => {
      if (l.startsWith("# watching")) watching = true;
    });
    await waitFor(() => watching, "faultline watch to connect", 20_000);
    await u.until(
      () => u.has(/n1 created FUSE group n1#1 of n1 n2 n3 n4 n5/),
      "the demo FUSE group of every node",
      20_000,
    );
    u.proc.stdin!.write("kill n3\n");
    await u.until(() => u.has(/n3 \(pid \d+\) exited: signal SIGKILL/), "n3 to die");
    await u.until(() => u.has(/n\d sees n3: (closed|reset)/), "peers to see n3's connection end");
    await u.until(() => u.has(/n\d sees n3: refused/), "peers to see n3 refuse");
    await u.until(
      () => u.lines.filter((l) => /n\d REPORTS n3: process-exit \(certain\)/.test(l)).length === 4,
      "every other node to report n3's process exit",
      20_000,
    );
    await u.until(
      () => u.lines.filter((l) => /n\d told: FUSE group n1#1 FAILED: n3 process-exit/.test(l)).length === 4,
      "every other member of the FUSE group to be told why it failed",
      20_000,
    );
    await waitFor(() => watched.length > 0, "faultline watch to print the report");
    const streamed = JSON.parse(watched[0]!);
    expect(streamed).toMatchObject({
      type: "failure",
      subject: "n3",
      kind: "process-exit",
      certainty: "certain",
    });
    watch.kill("SIGTERM");
    const status = spawnSync(
      process.execPath,
      ["--import", "tsx", "src/cli/main.ts", "status", "--admin", admin],
      {
        cwd: ROOT,
        encoding: "utf8",
      },
    );
    expect(status.stdout).toMatch(/n3: process-exit \(certain\) by agent/);
    u.proc.stdin!.write("restart n3\n");
    await u.until(() => u.pids().length === 6, "n3 to come back", 20_000);
    started.push(...u.childPids());
    await u.until(
      () => u.lines.filter((l) => /n\d sees n3: connected/.test(l)).length >= 5,
      "peers to reconnect to n3",
      20_000,
    );
    await u.until(
      () => u.lines.filter((l) => /n\d reports n3 recovered from process-exit/.test(l)).length === 4,
      "every other node to clear n3's failure",
      20_000,
    );
    // A new group of three, then a signal: every member is told, with the signaller's name.
    u.proc.stdin!.write("group n2\n");
    await u.until(() => u.has(/n2 created FUSE group n2#\d+ of/), "n2's group");
    u.proc.stdin!.write("signal n2\n");
    // Each member once (a FUSE member is told of a failure once); a member unreachable from the
    // signaller learns of it within the group's liveness bound instead, hence the longer wait.
    const toldOfSignal = () =>
      new Set(
        u.lines.flatMap((l) => /\] (n\d) told: FUSE group n2#\d+ FAILED: signal by n2/.exec(l)?.[1] ?? []),
      );
    await u.until(() => toldOfSignal().size === 3, "the three members to be told of n2's signal", 30_000);
    // The coordination service: etcd's API works, and killing its leader elects another.
    await u.until(() => u.has(/coordination leader: c\d \(term \d+\)/), "a coordination leader", 60_000);
    started.push(...u.childPids());
    const endpoints = /try: etcdctl --endpoints=(\S+) put/.exec(
      u.lines.filter((l) => /try: etcdctl --endpoints=\S+,\S+,\S+ put/.test(l)).at(-1) ?? "",
    )?.[1];
    expect(endpoints).toBeDefined();
    const client = new Etcd3({ hosts: endpoints!.split(",").map((e) => `http://${e}`) });
    try {
      await client.put("greeting").value("hello");
      expect(await client.get("greeting").string()).toBe("hello");
      const leaderLine = u.lines.filter((l) => /coordination leader:/.test(l)).at(-1)!;
      const [, leader, term] = /coordination leader: (c\d) \(term (\d+)\)/.exec(leaderLine)!;
      u.proc.stdin!.write(`kill ${leader}\n`);
      await u.until(
        () =>
          u.lines.some((l) => {
            const m = /coordination leader: (c\d) \(term (\d+)\)/.exec(l);
            return !!m && m[1] !== leader && Number(m[2]) > Number(term);
          }),
        "another coordination leader",
        20_000,
      );
      expect(await client.get("greeting").string()).toBe("hello");
    } finally {
      client.close();
    }
    u.proc.stdin!.write("quit\n");
    await Processes.exited(u.proc);
    expect(u.has(/all 5 node processes stopped \(and 3 coordination members\)/)).toBe(true);
    for (const pid of u.childPids()) expect(pidAlive(pid)).toBe(false);
  }, 120_000);

  it("stops every node on Ctrl-C (SIGINT)", async () => {
    const u = up(["--coord", "0"]);
    procs.track(u.proc);
    await u.until(() => u.pids().length === 5, "5 nodes listening", 60_000);
    started.push(...u.childPids());
    u.proc.stdin!.write("pause n2\n"); // a stopped child must be stopped too
    await u.until(() => u.has(/SIGSTOP n2/), "n2 paused");
    u.proc.kill("SIGINT");
    await Processes.exited(u.proc);
    expect(u.proc.exitCode).toBe(0);
    for (const pid of u.childPids()) expect(pidAlive(pid)).toBe(false);
  }, 120_000);

  it("leaves no orphan when the supervisor itself is SIGKILLed", async () => {
    const u = up();
    procs.track(u.proc);
    await u.until(() => u.pids().length === 5, "5 nodes listening", 60_000);
    started.push(...u.childPids());
    u.proc.kill("SIGKILL");
    await Processes.exited(u.proc as ChildProcess);
    await u.until(() => u.childPids().every((pid) => !pidAlive(pid)), "children to notice and exit", 10_000);
  }, 120_000);
});
