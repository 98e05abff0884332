import type { Reporter, RunnerTask, RunnerTestFile } from "vitest";

/** Ends the run with the plain line "N passed, N failed, N skipped" that any CI can read. */
export default class SummaryReporter implements Reporter {
  onFinished(files: RunnerTestFile[] = []): void {
    const n = { passed: 0, failed: 0, skipped: 0 };
    const walk = (t: RunnerTask) => {
      if (t.type === "test") {
        const state = t.result?.state;
        if (state === "pass") n.passed++;
        else if (state === "fail") n.failed++;
        else n.skipped++;
      } else if ("tasks" in t) {
        for (const c of t.tasks) walk(c);
      }
    };
    for (const f of files) {
      walk(f);
      if (f.result?.state === "fail" && f.tasks.length === 0) n.failed++; // a file that failed to load
    }
    process.stdout.write(`\ntests: ${n.passed} passed, ${n.failed} failed, ${n.skipped} skipped\n`);
  }
}
