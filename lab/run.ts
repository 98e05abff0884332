/**
 * The lab's scenarios and trials: each injects one real failure into a lab network of five hosts
 * running faultline, and measures, in the same trial, how long faultline took to report it (and
 * whether it named the right kind and subject), and what plain Linux mechanisms saw: an
 * established TCP connection with keepalive at Linux's defaults, one with aggressive keepalive and
 * TCP_USER_TIMEOUT, and a fresh connect() (lab/tcp_probe.py).
 */
import type { ChildProcess } from "node:child_process";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { parseDuration } from "../src/cli/options.ts";
import type { FailureKind, FailureReport } from "../src/detect/report.ts";
import { fuseBound } from "../src/fuse/fuse-core.ts";
import { SWIM_DEFAULTS } from "../src/membership/swim-types.ts";
import { ECHO_PORT, ECHO_RELAY_PORT, LabCluster, now, ROOT, type Seen } from "./cluster.ts";
import { type LabHost, LabNet } from "./netns.ts";

export type Mechanism = "default" | "aggressive" | "connect";
export const MECHANISMS: Mechanism[] = ["default", "aggressive", "connect"];

interface Ctx {
  net: LabNet;
  cluster: LabCluster;
  h: (name: string) => LabHost;
  /** Resolves after `ms`, or at once when the trial is being torn down. */
  sleep: (ms: number) => Promise<void>;
  /** Set when the trial ends: a scenario's background loop stops. */
  done: () => boolean;
}

export interface Scenario {
  name: string;
  /** What was done, for the table. */
  fault: string;
  expect: FailureKind;
  /** The report that detects this fault: its kind, and its subject (and peer) are right. */
  correct: (r: FailureReport, observer: string) => boolean;
  /**
   * Who the Linux mechanisms watch: from which host, to which address and port. The latency of
   * faultline is measured at the members on the same host (what an application there can learn).
   */
  probe: (ctx: Ctx) => { from: LabHost; host: string; port: number };
  inject: (ctx: Ctx) => Promise<void> | void;
  /** Undo what inject did that a restart of every process does not (SIGCONT, relays). */
  heal?: (ctx: Ctx) => Promise<void> | void;
  /** Two hosts whose nodes reach each other through bit-flipping relays (lab/corrupt-relay.ts). */
  relayed?: [string, string];
  /** Run with leases and fences (witnesses), so that a host crash can become certain. */
  fencing?: boolean;
  /** A longer window than the run's (a condition that takes a while to show by definition). */
  windowMs?: number;
  /** Extra time after healthy before injecting (a baseline to build). */
  settleMs?: number;
  /**
   * Before the fault, n1 creates a FUSE group of every host's node; the fault must fail it at
   * every member still running, within the bound T. Lists the hosts whose node the fault kills
   * (they are not told: they are gone).
   */
  fuse?: { gone: string[] };
}

/** The lab host a member runs on: n3 and agent:h3 are both on h3. */
export const hostOf = (id: string | undefined) => (id === undefined ? undefined : `h${id.at(-1)}`);

/** A path report between hosts a and b (either end, any member on them: a fault between two hosts
 *  is seen by their agents as well as their nodes). */
const pair = (r: FailureReport, a: string, b: string) => {
  const ends = [hostOf(r.subject), hostOf(r.peer)];
  return ends.includes(a) && ends.includes(b) && a !== b;
};

/** The processes of h3 that are not the agent: its node and its echo server. */
const appsOf = (ctx: Ctx, host: string) =>
  ctx.cluster.onHost(ctx.h(host)).filter((c) => c.role === "node" || c.role === "echo");

/** h3 is down (crashed or frozen): any member on it reported as a host crash. */
const h3Down = {
  expect: "host-crash",
  correct: (r: FailureReport) => r.kind === "host-crash" && hostOf(r.subject) === "h3",
  probe: (c: Ctx) => ({ from: c.h("h1"), host: c.h("h3").addr, port: ECHO_PORT }),
} as const;

/** A real crashed host sends no RST or FIN: h3 falls silent first, then everything on it dies. */
function crashH3(c: Ctx): void {
  c.net.silence(c.h("h3"));
  for (const p of c.cluster.onHost(c.h("h3"))) c.cluster.signal(p, "SIGKILL");
}

export const SCENARIOS: Scenario[] = [
  {
    name: "process crash",
    fault: "SIGKILL n3 (and the echo server); h3 and its agent run on",
    expect: "process-exit",
    correct: (r) => r.kind === "process-exit" && r.subject === "n3",
    probe: (c) => ({ from: c.h("h1"), host: c.h("h3").addr, port: ECHO_PORT }),
    fuse: { gone: ["h3"] },
    inject: (c) => {
      for (const p of appsOf(c, "h3")) c.cluster.signal(p, "SIGKILL");
    },
  },
  {
    name: "host crash",
    fault: "h3 silenced, then all its processes SIGKILLed",
    ...h3Down,
    fuse: { gone: ["h3"] },
    inject: crashH3,
  },
  {
    name: "host crash (leases)",
    fault: "the same, with leases and fences (witnesses: the agents of h1, h2, h4; 4 s lease)",
    ...h3Down,
    fencing: true,
    // Witnesses grant no lease until a fence bound after they start: let the agents hold theirs.
    settleMs: 15_000,
    inject: crashH3,
  },
  {
    name: "host freeze",
    fault: "h3 silenced and all its processes SIGSTOPped",
    ...h3Down,
    inject: (c) => {
      c.net.silence(c.h("h3"));
      for (const p of c.cluster.onHost(c.h("h3"))) c.cluster.signal(p, "SIGSTOP");
    },
    heal: (c) => {
      for (const p of c.cluster.onHost(c.h("h3"))) c.cluster.signal(p, "SIGCONT");
      c.net.restore(c.h("h3"));
    },
  },
  {
    name: "process hang",
    fault: "SIGSTOP n3 (and the echo server the TCP columns watch); h3 and its agent run on",
    expect: "process-exit",
    correct: (r) => r.kind === "process-exit" && r.subject === "n3",
    probe: (c) => ({ from: c.h("h1"), host: c.h("h3").addr, port: ECHO_PORT }),
    inject: (c) => {
      for (const p of appsOf(c, "h3")) c.cluster.signal(p, "SIGSTOP");
    },
    heal: (c) => {
      for (const p of appsOf(c, "h3")) c.cluster.signal(p, "SIGCONT");
    },
  },
  {
    name: "route failure",
    fault: "iptables DROP h1<->h3",
    expect: "route-failure",
    correct: (r) => r.kind === "route-failure" && pair(r, "h1", "h3"),
    probe: (c) => ({ from: c.h("h1"), host: c.h("h3").addr, port: ECHO_PORT }),
    inject: (c) => {
      c.net.drop(c.h("h1"), c.h("h3"));
      c.net.drop(c.h("h3"), c.h("h1"));
    },
  },
  {
    name: "partition",
    fault: "iptables DROP between {h1,h2} and {h3,h4,h5}",
    expect: "partition",
    correct: (r, observer) => r.kind === "partition" && side(observer) !== side(r.subject),
    probe: (c) => ({ from: c.h("h1"), host: c.h("h3").addr, port: ECHO_PORT }),
    fuse: { gone: [] },
    inject: (c) => {
      for (const a of ["h1", "h2"])
        for (const b of ["h3", "h4", "h5"]) {
          c.net.drop(c.h(a), c.h(b));
          c.net.drop(c.h(b), c.h(a));
        }
    },
  },
  {
    name: "one-way partition",
    fault: "iptables DROP {h1,h2} -> {h3,h4,h5} only",
    expect: "partition",
    correct: (r, observer) => r.kind === "partition" && side(observer) !== side(r.subject),
    probe: (c) => ({ from: c.h("h1"), host: c.h("h3").addr, port: ECHO_PORT }),
    fuse: { gone: [] },
    inject: (c) => {
      for (const a of ["h1", "h2"]) for (const b of ["h3", "h4", "h5"]) c.net.drop(c.h(a), c.h(b));
    },
  },
  {
    name: "congestion",
    fault: "tbf 2 Mbit/s (100 ms queue) on h3's link, a bulk flow, 3% loss",
    expect: "congestion",
    correct: (r) => r.kind === "congestion" && (hostOf(r.subject) === "h3" || hostOf(r.peer) === "h3"),
    probe: (c) => ({ from: c.h("h1"), host: c.h("h3").addr, port: ECHO_PORT }),
    settleMs: 25_000,
    inject: async (c) => {
      c.net.rateLimit(c.h("h3"), "2mbit", 100);
      c.net.loss(c.h("h3"), 0.03);
      const bulk = c.net.spawn(c.h("h3"), "python3", [
        join(ROOT, "lab/tcp_probe.py"),
        "blast",
        c.h("h2").addr,
        String(ECHO_PORT),
      ]);
      bulk.on("error", () => {});
      (c as Ctx & { bulk?: ChildProcess }).bulk = bulk;
    },
    heal: (c) => {
      (c as Ctx & { bulk?: ChildProcess }).bulk?.kill("SIGKILL");
    },
  },
  {
    name: "corruption",
    fault: "a relay on h4<->h5 flips a bit in 30% of chunks",
    expect: "corruption",
    relayed: ["h4", "h5"],
    correct: (r) => r.kind === "corruption" && pair(r, "h4", "h5"),
    probe: (c) => ({ from: c.h("h4"), host: c.h("h4").addr, port: ECHO_RELAY_PORT }),
    inject: (c) => {
      c.cluster.relay(c.h("h4"), true);
      c.cluster.relay(c.h("h5"), true);
    },
    heal: (c) => {
      c.cluster.relay(c.h("h4"), false);
      c.cluster.relay(c.h("h5"), false);
    },
  },
  {
    name: "route instability",
    fault: "iptables DROP h1<->h3 for 1.5 s every 3.5 s",
    // Six changes of the path's state within a minute, seen by probes that reach n3 about once a
    // round: half a minute or so.
    windowMs: 45_000,
    expect: "route-instability",
    correct: (r) => r.kind === "route-instability" && pair(r, "h1", "h3"),
    probe: (c) => ({ from: c.h("h1"), host: c.h("h3").addr, port: ECHO_PORT }),
    inject: (c) => {
      void (async () => {
        while (!c.done()) {
          c.net.drop(c.h("h1"), c.h("h3"));
          c.net.drop(c.h("h3"), c.h("h1"));
          await c.sleep(1500);
          if (c.done()) return;
          c.net.undrop(c.h("h1"), c.h("h3"));
          c.net.undrop(c.h("h3"), c.h("h1"));
          await c.sleep(2000);
        }
      })();
    },
  },
];

/** n1 makes a FUSE group of every host's node, and the lab waits until it is created. */
async function fuseGroup(cluster: LabCluster, net: LabNet): Promise<string> {
  const from = cluster.fuse.length;
  const [creator, ...rest] = net.hosts;
  cluster.fuseCreate(
    creator!,
    rest.map((h) => cluster.nodeId(h)),
  );
  let created: string | undefined;
  await waitFor(
    () => {
      const e = cluster.fuse
        .slice(from)
        .find((f) => f.node === cluster.nodeId(creator!) && f.type !== "failed");
      if (e?.type === "create-failed")
        throw new Error(`lab: the FUSE group could not be created: ${e.detail}`);
      created = e?.group;
      return created !== undefined;
    },
    10_000,
    () => "n1 to create a FUSE group",
  );
  return created!;
}

/** The FUSE bound T for the lab's SWIM settings and cluster (a node and an agent per host). */
function labFuseBound(cfg: LabConfig, members: number): number {
  return fuseBound(
    {
      probeIntervalMs: parseDuration(cfg.probeInterval),
      awarenessMax: SWIM_DEFAULTS.awarenessMax,
      suspicionMult: cfg.suspicionMult,
      suspicionMaxTimeoutMult: SWIM_DEFAULTS.suspicionMaxTimeoutMult,
    },
    members,
  );
}

/** The side of the partition a member is on: {h1, h2} or {h3, h4, h5}. */
function side(id: string): "a" | "b" {
  return ["h1", "h2"].includes(hostOf(id)!) ? "a" : "b";
}

export interface TrialResult {
  scenario: string;
  trial: number;
  /** ms from injection to the first correct report, from any observer; undefined: none in the window. */
  detectedMs?: number;
  /** ms from injection until a correct report was certain at the observing host, if it became so. */
  certainMs?: number;
  /** The first correct report. */
  first?: { observer: string; kind: FailureKind; certainty: string; subject: string; peer?: string };
  /** The kinds and certainties of every correct report. */
  certainties: string[];
  /** Failure reports that were not correct: a wrong kind or subject, or a healthy host reported. */
  wrong: Array<{
    observer: string;
    kind: FailureKind;
    subject: string;
    peer?: string;
    certainty: string;
    evidence: string[];
  }>;
  /** How long the trial watched after injection (ms). */
  watchedMs: number;
  /** ms from injection to each Linux mechanism's first error; undefined: none in the window. */
  linux: Partial<Record<Mechanism, { ms: number; err: string }>>;
  /** The FUSE group of every node, when the scenario has one. */
  fuse?: FuseResult;
}

export interface FuseResult {
  /** Members still running after the fault, and how many of them were told the group failed. */
  live: string[];
  told: number;
  /** ms from injection until the last live member was told (all of them told). */
  allMs?: number;
  /** The bound T for this cluster (fuseBound). */
  boundMs: number;
  /** Why each member was told (distinct reasons). */
  reasons: string[];
  /** Anything FUSE must never do: fire before the fault, tell a member twice. */
  wrong: string[];
}

export interface LabConfig {
  bundle: string;
  trials: number;
  /** How long a trial watches after injection (the Linux mechanisms' window), ms. */
  windowMs: number;
  /**
   * End a trial this long after faultline's detection rather than at the end of the window (the
   * short form in the test suite: the Linux mechanisms then get less time to show anything).
   */
  graceMs?: number;
  /** Scenario names to run (all when empty). */
  only: string[];
  verbose: boolean;
  /** Progress lines. */
  log: (line: string) => void;
  /** SWIM settings of the lab's nodes. */
  probeInterval: string;
  probeTimeout: string;
  suspicionMult: number;
}

export const LAB_SWIM = { probeInterval: "500ms", probeTimeout: "400ms", suspicionMult: 4 } as const;

/** A trial that went wrong: not detected, a wrong report, or a FUSE group not failed right. */
export function trialFailed(r: TrialResult): boolean {
  if (r.detectedMs === undefined || r.wrong.length > 0) return true;
  return (
    r.fuse !== undefined &&
    (r.fuse.allMs === undefined || r.fuse.allMs > r.fuse.boundMs || r.fuse.wrong.length > 0)
  );
}

/** Run the scenarios; the network and every process are gone when it returns or throws. */
export async function runLab(cfg: LabConfig): Promise<TrialResult[]> {
  const net = LabNet.create(5);
  const cluster = new LabCluster(net, {
    bundle: cfg.bundle,
    probeInterval: cfg.probeInterval,
    probeTimeout: cfg.probeTimeout,
    suspicionMult: cfg.suspicionMult,
    verbose: cfg.verbose,
  });
  const results: TrialResult[] = [];
  try {
    const scenarios = SCENARIOS.filter((s) => cfg.only.length === 0 || cfg.only.includes(s.name));
    for (const s of scenarios) {
      for (let t = 1; t <= cfg.trials; t++) {
        const r = await trial(net, cluster, s, t, cfg);
        results.push(r);
        cfg.log(
          `${s.name} #${t}: ${r.first ? `${r.first.kind} (${r.first.certainty}) of ${r.first.subject}${r.first.peer ? `~${r.first.peer}` : ""} by ${r.first.observer} in ${r.detectedMs!.toFixed(0)} ms` : "NOT DETECTED"}` +
            `${r.wrong.length ? `; WRONG: ${r.wrong.map((w) => `${w.observer}: ${w.kind} of ${w.subject}${w.peer ? `~${w.peer}` : ""} [${w.evidence.join("; ")}]`).join(", ")}` : ""}` +
            `; linux: ${MECHANISMS.map((m) => `${m} ${r.linux[m] ? `${r.linux[m]!.err} ${r.linux[m]!.ms.toFixed(0)} ms` : "-"}`).join(", ")}` +
            (r.fuse
              ? `; FUSE: ${r.fuse.told}/${r.fuse.live.length} told${r.fuse.allMs !== undefined ? ` in ${r.fuse.allMs.toFixed(0)} ms` : ""} [${r.fuse.reasons.join("; ")}]${r.fuse.wrong.length ? ` WRONG: ${r.fuse.wrong.join(", ")}` : ""}`
              : ""),
        );
      }
    }
  } finally {
    await cluster.stop();
    net.destroy();
  }
  return results;
}

async function waitFor(cond: () => boolean, ms: number, what: () => string): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`lab: timed out after ${ms} ms waiting for ${what()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function trial(
  net: LabNet,
  cluster: LabCluster,
  s: Scenario,
  n: number,
  cfg: LabConfig,
): Promise<TrialResult> {
  // Each trial starts from scratch: no rule, limit or loss left, every process a new life, so that
  // no trial inherits another's suspicions, path history or baselines.
  net.heal();
  await cluster.restart(s.relayed ?? [], s.fencing ?? false);
  await waitFor(
    () => cluster.healthy().ok,
    60_000,
    () => `a healthy cluster before "${s.name}" #${n} (${cluster.healthy().why})`,
  );
  let ended = false;
  const timers = new Set<() => void>();
  const ctx: Ctx = {
    net,
    cluster,
    h: (name) => net.host(name),
    done: () => ended,
    sleep: (ms) =>
      new Promise<void>((resolve) => {
        const t = setTimeout(() => {
          timers.delete(wake);
          resolve();
        }, ms);
        const wake = () => {
          clearTimeout(t);
          resolve();
        };
        timers.add(wake);
      }),
  };
  await ctx.sleep(s.settleMs ?? 2000);
  // A group that could not be made fails the trial's FUSE part, not the whole run.
  let fuseSetup: string | undefined;
  const group = s.fuse
    ? await fuseGroup(cluster, net).catch((e: Error) => {
        fuseSetup = e.message;
        return undefined;
      })
    : undefined;
  // The Linux mechanisms: connected and ready before the fault.
  const target = s.probe(ctx);
  const probe = net.spawn(
    target.from,
    "python3",
    [join(ROOT, "lab/tcp_probe.py"), "watch", target.host, String(target.port)],
    {
      stdio: ["ignore", "pipe", "ignore"],
    },
  );
  const linuxSeen: Array<{ mech: Mechanism; at: number; err: string }> = [];
  let ready = false;
  createInterface({ input: probe.stdout! }).on("line", (line) => {
    const e = JSON.parse(line) as { ready?: boolean; mech?: Mechanism; at?: number; err?: string };
    if (e.ready) ready = true;
    else if (e.mech && e.at !== undefined)
      linuxSeen.push({ mech: e.mech, at: e.at * 1000, err: e.err ?? "?" });
  });
  try {
    await waitFor(
      () => ready,
      10_000,
      () => `the TCP observers of "${s.name}" to connect`,
    );
    const from = cluster.seen.length;
    const t0 = now();
    await s.inject(ctx);
    const correctSeen = (x: Seen) => x.report.type === "failure" && s.correct(x.report, x.observer);
    const detectedHere = (x: Seen) => x.at >= t0 && hostOf(x.observer) === target.from.name && correctSeen(x);
    const windowMs = Math.max(cfg.windowMs, s.windowMs ?? 0);
    let end = t0 + windowMs;
    const live = s.fuse
      ? net.hosts.filter((h) => !s.fuse!.gone.includes(h.name)).map((h) => cluster.nodeId(h))
      : [];
    const fuseTold = () =>
      cluster.fuse.filter(
        (f) => f.type === "failed" && f.group === group && f.at >= t0 && live.includes(f.node),
      );
    const allTold = () => new Set(fuseTold().map((f) => f.node)).size === live.length;
    const boundMs = labFuseBound(cfg, net.hosts.length * 2);
    // Watch the whole window (or a grace period after detection, and after every live member of
    // the group was told): wrong reports may come after the right one.
    await waitFor(
      () => {
        if (cfg.graceMs !== undefined) {
          const hit = cluster.seen.slice(from).find(detectedHere);
          if (hit && (group === undefined || allTold()))
            end = Math.min(end, Math.max(hit.at, now()) + cfg.graceMs);
        }
        return now() >= end;
      },
      windowMs + 5000,
      () => "the window",
    );
    // A FUSE group may take longer than the window to fail everywhere (its bound T is far longer):
    // keep waiting for it, up to T, without counting the extra time for anything else.
    let fuseEnd = end;
    if (s.fuse && group !== undefined) {
      await waitFor(
        () => allTold() || now() >= t0 + boundMs,
        boundMs + 5000,
        () => "the FUSE group to fail everywhere",
      );
      fuseEnd = Math.max(end, now());
    }
    ended = true;
    for (const wake of timers) wake();
    const after = cluster.seen
      .slice(from)
      .filter((x) => x.at >= t0 && x.at <= end && x.report.type === "failure");
    const firstOk = after.find(detectedHere);
    const result: TrialResult = {
      scenario: s.name,
      trial: n,
      watchedMs: end - t0,
      certainties: [],
      wrong: [],
      linux: {},
    };
    if (firstOk) {
      const r = firstOk.report as FailureReport;
      result.detectedMs = firstOk.at - t0;
      result.first = {
        observer: firstOk.observer,
        kind: r.kind,
        certainty: r.certainty,
        subject: r.subject,
        ...(r.peer ? { peer: r.peer } : {}),
      };
    }
    const certain = after.find((x) => detectedHere(x) && (x.report as FailureReport).certainty === "certain");
    if (certain) result.certainMs = certain.at - t0;
    for (const x of after) {
      const r = x.report as FailureReport;
      if (correctSeen(x)) {
        const c = `${r.kind} (${r.certainty})`;
        if (!result.certainties.includes(c)) result.certainties.push(c);
      } else {
        result.wrong.push({
          observer: x.observer,
          kind: r.kind,
          subject: r.subject,
          certainty: r.certainty,
          ...(r.peer ? { peer: r.peer } : {}),
          evidence: r.evidence.map((e) => e.what),
        });
      }
    }
    for (const m of MECHANISMS) {
      const e = linuxSeen.find((x) => x.mech === m && x.at >= t0 && x.at <= end);
      if (e) result.linux[m] = { ms: e.at - t0, err: e.err };
    }
    if (s.fuse) {
      const told = fuseTold().filter((f) => f.at <= fuseEnd);
      const firstAt = new Map<string, number>();
      const wrong = group === undefined ? [`no group: ${fuseSetup}`] : [];
      for (const f of told)
        if (!firstAt.has(f.node)) firstAt.set(f.node, f.at);
        else wrong.push(`${f.node} told twice`);
      for (const f of cluster.fuse)
        if (f.type === "failed" && f.group === group && f.at < t0)
          wrong.push(`${f.node} told before the fault (${f.detail})`);
      result.fuse = {
        live,
        told: firstAt.size,
        ...(firstAt.size === live.length ? { allMs: Math.max(...firstAt.values()) - t0 } : {}),
        boundMs,
        reasons: [...new Set(told.map((f) => f.detail))],
        wrong,
      };
    }
    return result;
  } finally {
    ended = true;
    for (const wake of timers) wake();
    probe.kill("SIGKILL");
    await s.heal?.(ctx);
    net.heal();
  }
}
