import { createHash, type Hash } from "node:crypto";

/**
 * The simulation's event trace. Every line is hashed (SHA-256) as it is written, so two runs of one
 * seed can be compared by hash without keeping millions of lines; the most recent lines are kept
 * for the failure report, and all of them when asked.
 */
export class Trace {
  private readonly hash: Hash = createHash("sha256");
  private readonly recent: string[] = [];
  private readonly all: string[] | undefined;
  private digestCache: string | undefined;
  lines = 0;

  constructor(
    private readonly keepRecent = 200,
    keepAll = false,
    private readonly sink?: (line: string) => void,
  ) {
    this.all = keepAll ? [] : undefined;
  }

  write(time: number, what: string): void {
    const line = `${time.toFixed(3)} ${what}`;
    this.hash.update(line);
    this.hash.update("\n");
    this.lines++;
    this.digestCache = undefined;
    this.recent.push(line);
    if (this.recent.length > this.keepRecent) this.recent.shift();
    this.all?.push(line);
    this.sink?.(line);
  }

  /** Hash of every line so far (the trace continues to be hashable afterwards). */
  digest(): string {
    this.digestCache ??= this.hash.copy().digest("hex");
    return this.digestCache;
  }

  tail(n = this.keepRecent): string[] {
    return this.recent.slice(-n);
  }

  allLines(): string[] | undefined {
    return this.all;
  }
}
