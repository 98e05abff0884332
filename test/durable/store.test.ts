import { randomBytes } from "node:crypto";
import {
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  truncateSync,
  unlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { LmdbStore, VolatileStore } from "../../src/durable/store.ts";
import { isFaultlineError } from "../../src/runtime/errors.ts";
import { Processes } from "../fixtures/processes.ts";

describe("LmdbStore", () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });
  const fresh = () => {
    const d = mkdtempSync(join(tmpdir(), "faultline-store-"));
    dirs.push(d);
    return join(d, "p1");
  };

  /** A store with some data in it, closed. */
  async function filled(): Promise<string> {
    const dir = fresh();
    const s = LmdbStore.open(dir);
    s.commit(new Map<string, unknown>([["state", { n: 1 }]]));
    const big = new Map<string, unknown>();
    for (let i = 0; i < 2000; i++) big.set(`o/x/${String(i).padStart(16, "0")}`, { body: "y".repeat(100) });
    s.commit(big);
    await s.close();
    return dir;
  }

  it("close() waits for commits already handed to the write thread; a commit after close is refused", async () => {
    const dir = fresh();
    const s = LmdbStore.open(dir);
    // Queued, not awaited: a Raft member stopped while its batch is on its way to disk.
    const pending = [1, 2, 3].map((i) => s.commitAsync!(new Map<string, unknown>([[`k${i}`, i]])));
    await s.close();
    await Promise.all(pending);
    await expect(s.commitAsync!(new Map<string, unknown>([["late", 1]]))).rejects.toThrow(/is closed/);
    const again = LmdbStore.open(dir);
    expect([...again.load()]).toEqual([
      ["k1", 1],
      ["k2", 2],
      ["k3", 3],
    ]);
    await again.close();
  });

  it("commits atomic batches that survive a reopen; undefined deletes", async () => {
    const dir = fresh();
    const s = LmdbStore.open(dir);
    s.commit(
      new Map<string, unknown>([
        ["state", { n: 1 }],
        ["i/a", 7],
      ]),
    );
    s.commit(
      new Map<string, unknown>([
        ["i/a", undefined],
        ["n/c", 3],
      ]),
    );
    await s.close();
    const again = LmdbStore.open(dir);
    expect(again.load()).toEqual(
      new Map<string, unknown>([
        ["n/c", 3],
        ["state", { n: 1 }],
      ]),
    );
    await again.close();
  });

  const expectBadStore = (dir: string, what: RegExp) => {
    let err: unknown;
    try {
      LmdbStore.open(dir);
    } catch (e) {
      err = e;
    }
    expect(isFaultlineError(err, "FL_BAD_STORE")).toBe(true);
    const m = (err as Error).message;
    expect(m).toContain(join(dir, "data.mdb"));
    expect(m).toMatch(what);
    expect(m).toMatch(/Restore the directory from a backup|move .* aside/);
  };

  it("a garbage data file is refused with a clear error naming the file, and left as it was", async () => {
    const dir = await filled();
    const garbage = randomBytes(64 * 1024);
    writeFileSync(join(dir, "data.mdb"), garbage);
    expectBadStore(dir, /not an LMDB file/);
    expect(readFileSync(join(dir, "data.mdb")).equals(garbage)).toBe(true);
  });

  it("a truncated data file is refused (to a page, to a few pages, to nothing)", async () => {
    for (const size of [4096, 8192, 0, 5000]) {
      const dir = await filled();
      truncateSync(join(dir, "data.mdb"), size);
      expectBadStore(dir, /truncated|meta page|empty/);
    }
  });

  it("a store whose data file is gone is refused, never reset to empty", async () => {
    const dir = await filled();
    unlinkSync(join(dir, "data.mdb"));
    expectBadStore(dir, /missing/);
  });

  // The state a kill between LMDB's file and the marker leaves (the new order's only window).
  it("a store whose creation was cut short after LMDB wrote its file (no marker) opens with its data", async () => {
    const dir = await filled();
    unlinkSync(join(dir, "faultline-store.json"));
    writeFileSync(join(dir, "faultline-store.json.tmp"), "{"); // a marker write cut short too
    const s = LmdbStore.open(dir);
    expect(s.load().get("state")).toEqual({ n: 1 });
    await s.close();
    expect(existsSync(join(dir, "faultline-store.json"))).toBe(true);
    unlinkSync(join(dir, "data.mdb"));
    expectBadStore(dir, /missing/); // marked again: a lost data file is an error once more
  });

  it("a process SIGKILLed while it creates stores leaves every one openable", async () => {
    const procs = new Processes();
    const d = mkdtempSync(join(tmpdir(), "faultline-store-"));
    dirs.push(d);
    try {
      let opened = 0;
      for (let round = 0; round < 6; round++) {
        const root = join(d, `r${round}`);
        const { proc } = await procs.startTs("test/fixtures/store-creator.ts", [root]);
        await new Promise((r) => setTimeout(r, 100 + Math.random() * 200));
        proc.kill("SIGKILL");
        await Processes.exited(proc);
        const made = existsSync(root) ? readdirSync(root) : [];
        opened += made.length;
        for (const name of made) {
          const s = LmdbStore.open(join(root, name)); // throws FL_BAD_STORE if a marker outlived its data
          const state = s.load().get("state") as { i: number } | undefined;
          if (state !== undefined) expect(`s${state.i}`).toBe(name);
          await s.close();
        }
      }
      expect(opened).toBeGreaterThan(6); // the child got going (hundreds a round, usually)
    } finally {
      await procs.killAll();
    }
  });

  it("a path that is a file is refused", () => {
    const d = mkdtempSync(join(tmpdir(), "faultline-store-"));
    dirs.push(d);
    const file = join(d, "plain");
    writeFileSync(file, "not a directory");
    expect(() => LmdbStore.open(file)).toThrow(/is not a directory/);
  });
});

describe("VolatileStore", () => {
  it("keeps a copy of what a byte view shows, not the whole buffer under it", () => {
    const s = new VolatileStore();
    const big = new Uint8Array(1 << 20).fill(7);
    const chunk = big.subarray(4096, 4096 + 10);
    s.commit(
      new Map<string, unknown>([
        ["chunk", chunk],
        ["obj", { a: [1, 2], b: "x" }],
      ]),
    );
    big.fill(9); // the caller's memory changes later: the store's copy does not
    const got = s.load();
    const c = got.get("chunk") as Uint8Array;
    expect(c).toBeInstanceOf(Uint8Array);
    expect([...c]).toEqual(Array(10).fill(7));
    expect(c.buffer.byteLength).toBe(10);
    expect(got.get("obj")).toEqual({ a: [1, 2], b: "x" });
    // What load() hands out is a copy too.
    c.fill(1);
    expect([...(s.load().get("chunk") as Uint8Array)]).toEqual(Array(10).fill(7));
  });
});
