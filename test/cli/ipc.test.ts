import { fork } from "node:child_process";
import { describe, expect, it } from "vitest";

describe("supervised processes", () => {
  it("a child whose supervisor went away while it was starting stops once it is up", async () => {
    const child = fork("test/fixtures/late-supervised.ts", ["500"], {
      execArgv: ["--import", "tsx"],
      stdio: "ignore",
    });
    try {
      await new Promise((r) => child.once("spawn", r));
      child.disconnect(); // the supervisor's end of the channel closes before the child listens
      const code = await new Promise<number | null>((resolve, reject) => {
        const t = setTimeout(() => reject(new Error("the child outlived its supervisor")), 8000);
        child.once("exit", (c) => {
          clearTimeout(t);
          resolve(c);
        });
      });
      expect(code).toBe(0);
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    }
  }, 15_000);
});
