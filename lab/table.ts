import { MECHANISMS, type Mechanism, SCENARIOS, type TrialResult } from "./run.ts";

/**
 * What Walfish, Aguilera, Gupta and Leners ("Failure detection as a network abstraction for
 * end-host applications") measured end-host mechanisms taking, by the kind of failure.
 */
const WALFISH: Partial<Record<string, string>> = {
  "host crash": "18–21 s (OS crash)",
  "host crash (leases)": "18–21 s (OS crash)",
  "host freeze": "18–21 s (OS crash)",
  "route failure": "~3 s (link failure)",
  partition: "~3 s (link failure)",
  "one-way partition": "~3 s (link failure)",
  congestion: "never (overload)",
};

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0
    ? undefined
    : s.length % 2
      ? s[(s.length - 1) / 2]!
      : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

const fmt = (ms: number | undefined) =>
  ms === undefined ? "—" : ms < 10_000 ? `${ms.toFixed(0)} ms` : `${(ms / 1000).toFixed(1)} s`;

/** A Linux mechanism over the trials: "median (max)" when it saw every trial, else how many it saw. */
function linuxCell(rs: TrialResult[], m: Mechanism): string {
  const seen = rs.flatMap((r) => (r.linux[m] ? [r.linux[m]!] : []));
  if (seen.length === 0) return `none in ${(Math.min(...rs.map((r) => r.watchedMs)) / 1000).toFixed(0)} s`;
  const errs = [...new Set(seen.map((x) => x.err))].join("/");
  const times = seen.map((x) => x.ms);
  const base = `${fmt(median(times))} (${fmt(Math.max(...times))}) ${errs}`;
  return seen.length === rs.length ? base : `${base}, ${seen.length}/${rs.length} trials`;
}

/** The lab's results as a Markdown table, one row per scenario. */
export function labTable(results: TrialResult[]): string {
  const rows = [
    "| scenario | fault injected | faultline reported | trials right | faultline median (max) | wrong reports | TCP, default keepalive | TCP, aggressive keepalive + TCP_USER_TIMEOUT | fresh connect() | Walfish et al. |",
    "|---|---|---|---|---|---|---|---|---|---|",
  ];
  for (const s of SCENARIOS) {
    const rs = results.filter((r) => r.scenario === s.name);
    if (rs.length === 0) continue;
    const detected = rs.flatMap((r) => (r.detectedMs === undefined ? [] : [r.detectedMs]));
    const firsts = [
      ...new Set(rs.flatMap((r) => (r.first ? [`${r.first.kind} (${r.first.certainty})`] : []))),
    ];
    const later = [...new Set(rs.flatMap((r) => r.certainties))].filter((c) => !firsts.includes(c));
    // What the observing host heard first, then anything else right that anyone reported.
    const certain = rs.flatMap((r) => (r.certainMs === undefined ? [] : [r.certainMs]));
    const reported =
      ([...firsts, ...later].join(", ") || "nothing") +
      (certain.length > 0 && !firsts.some((f) => f.includes("(certain)"))
        ? `; certain after ${fmt(median(certain))} (${fmt(Math.max(...certain))})${certain.length < rs.length ? `, ${certain.length}/${rs.length} trials` : ""}`
        : "");
    const right = rs.filter((r) => r.detectedMs !== undefined && r.wrong.length === 0).length;
    const wrong = rs.reduce((n, r) => n + r.wrong.length, 0);
    const latency = detected.length ? `${fmt(median(detected))} (${fmt(Math.max(...detected))})` : "—";
    rows.push(
      `| ${s.name} | ${s.fault} | ${reported} | ${right}/${rs.length} | ${latency} | ${wrong} | ${MECHANISMS.map((m) => linuxCell(rs, m)).join(" | ")} | ${WALFISH[s.name] ?? "—"} |`,
    );
  }
  return rows.join("\n");
}

/** The FUSE group of every node, per scenario that has one: were all live members told, how fast. */
export function fuseTable(results: TrialResult[]): string | undefined {
  const rows = [
    "| scenario | members told (all trials) | all told: median (max) | bound T | why they were told | never (fired early, told twice) |",
    "|---|---|---|---|---|---|",
  ];
  for (const s of SCENARIOS) {
    const rs = results.filter((r) => r.scenario === s.name && r.fuse);
    if (rs.length === 0) continue;
    const told = rs.reduce((n, r) => n + r.fuse!.told, 0);
    const live = rs.reduce((n, r) => n + r.fuse!.live.length, 0);
    const all = rs.flatMap((r) => (r.fuse!.allMs === undefined ? [] : [r.fuse!.allMs]));
    const reasons = [...new Set(rs.flatMap((r) => r.fuse!.reasons))].join("; ");
    const wrong = rs.reduce((n, r) => n + r.fuse!.wrong.length, 0);
    rows.push(
      `| ${s.name} | ${told}/${live} | ${all.length ? `${fmt(median(all))} (${fmt(Math.max(...all))})` : "—"}${all.length < rs.length ? `, ${all.length}/${rs.length} trials` : ""} | ${fmt(rs[0]!.fuse!.boundMs)} | ${reasons || "—"} | ${wrong} |`,
    );
  }
  return rows.length > 2 ? rows.join("\n") : undefined;
}
