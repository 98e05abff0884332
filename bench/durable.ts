// Durable processes: turns/s and per-turn latency for `sync` with and without group commit and
// for `memory`, beside the raw cost of one LMDB sync commit on this disk (the floor), and a
// channel between two durable processes over loopback TCP. Run: npm run bench -- --only durable
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { open } from "lmdb";
import type { DurableHandlers } from "../src/durable/ken-core.ts";
import { DurableProcess } from "../src/durable/process.ts";
import { type DurableStore, LmdbStore, VolatileStore } from "../src/durable/store.ts";
import { TcpTransport } from "../src/net/tcp-transport.ts";
import type { Transport } from "../src/net/transport.ts";
import { realClock } from "../src/runtime/clock.ts";
import { fmt, summarize, table } from "./lib.ts";

const VALUE = { account: "acct-0042", amount: 1234, memo: "x".repeat(60) }; // ~100 bytes encoded

/** The floor: one LMDB write transaction of one ~100-byte put, synced, back to back. */
async function rawCommit(dir: string, n: number): Promise<{ p50: number; p99: number; perSec: number }> {
  const env = open({ path: join(dir, "raw") });
  const lat: number[] = [];
  const t0 = performance.now();
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    env.transactionSync(() => {
      env.putSync(`k${i % 1000}`, VALUE);
    });
    lat.push(performance.now() - t);
  }
  const secs = (performance.now() - t0) / 1000;
  await env.close();
  const s = summarize(lat);
  return { p50: s.p50, p99: s.p99, perSec: n / secs };
}

/** A transport that carries nothing (the turn benches use local inputs only). */
const nowhere: Transport = {
  id: "bench",
  start: async () => {},
  stop: async () => {},
  send: () => {},
  on: () => () => {},
} as unknown as Transport;

interface Input {
  done: () => void;
}
const counter: DurableHandlers<{ count: number; last: typeof VALUE | undefined }> = {
  initial: () => ({ count: 0, last: undefined }),
  onInput(ctx, input) {
    ctx.state.count++;
    ctx.state.last = VALUE;
    ctx.output((input as Input).done); // the client hears back once the turn is durable
  },
};

/** `clients` closed-loop clients submit inputs for `ms`; each waits for its turn's output commit. */
async function turns(store: DurableStore, groupCommit: boolean, clients: number, ms: number) {
  const p = new DurableProcess({
    id: "bench",
    transport: nowhere,
    clock: realClock,
    store,
    handlers: counter,
    groupCommit,
  });
  p.start();
  const lat: number[] = [];
  let done = 0;
  const end = performance.now() + ms;
  const client = async () => {
    while (performance.now() < end) {
      const t = performance.now();
      await new Promise<void>((resolve) => p.submit({ done: resolve } satisfies Input));
      lat.push(performance.now() - t);
      done++;
    }
  };
  const t0 = performance.now();
  await Promise.all(Array.from({ length: clients }, client));
  const secs = (performance.now() - t0) / 1000;
  p.stop();
  await store.close();
  const s = summarize(lat);
  return { perSec: done / secs, p50: s.p50, p99: s.p99 };
}

/** Messages through one durable channel, a → b over loopback TCP, both `sync`, group commit. */
async function channel(dir: string, n: number): Promise<{ perSec: number }> {
  const key = randomBytes(32);
  const ta = new TcpTransport({ id: "a", clusterKey: key });
  const tb = new TcpTransport({ id: "b", clusterKey: key });
  await ta.start();
  await tb.start();
  ta.addPeer("b", tb.address());
  tb.addPeer("a", ta.address());
  let received = 0;
  let finished: () => void = () => {};
  const all = new Promise<void>((r) => {
    finished = r;
  });
  const a = new DurableProcess<{ n: number }>({
    id: "a",
    transport: ta,
    clock: realClock,
    store: LmdbStore.open(join(dir, "a")),
    handlers: {
      initial: () => ({ n: 0 }),
      onInput(ctx) {
        ctx.state.n++;
        ctx.send("b", { n: ctx.state.n, v: VALUE });
      },
    },
  });
  const b = new DurableProcess<{ n: number }>({
    id: "b",
    transport: tb,
    clock: realClock,
    store: LmdbStore.open(join(dir, "b")),
    handlers: {
      initial: () => ({ n: 0 }),
      onMessage(ctx, _from, m) {
        ctx.state.n = (m as { n: number }).n;
        ctx.output(() => {
          if (++received === n) finished();
        });
      },
    },
  });
  a.start();
  b.start();
  const t0 = performance.now();
  let submitted = 0;
  const feed = () => {
    const inFlight = submitted - received;
    for (let k = 0; k < 500 && submitted < n && inFlight + k < 2000; k++, submitted++) a.submit("go");
    if (submitted < n) setImmediate(feed);
  };
  feed();
  await all;
  const secs = (performance.now() - t0) / 1000;
  a.stop();
  b.stop();
  await Promise.all([ta.stop(), tb.stop()]);
  return { perSec: n / secs };
}

export async function benchDurable(quick: boolean): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), "faultline-bench-durable-"));
  const ms = quick ? 500 : 3000;
  try {
    const raw = await rawCommit(dir, quick ? 500 : 3000);
    let i = 0;
    const lmdb = () => LmdbStore.open(join(dir, `p${i++}`));
    const rows: (string | number)[][] = [
      [
        "raw LMDB sync commit (floor), 1 at a time",
        fmt(raw.perSec, 0),
        fmt(raw.p50 * 1000, 0),
        fmt(raw.p99 * 1000, 0),
        "",
      ],
    ];
    const cases: Array<[string, () => DurableStore, boolean, number]> = [
      ["sync, group commit, 1 client", lmdb, true, 1],
      ["sync, no group commit, 1 client", lmdb, false, 1],
      ["sync, group commit, 256 clients", lmdb, true, 256],
      ["sync, no group commit, 256 clients", lmdb, false, 256],
      ["memory, group commit, 1 client", () => new VolatileStore(), true, 1],
      ["memory, group commit, 256 clients", () => new VolatileStore(), true, 256],
    ];
    let lowLoadP50 = Number.NaN;
    for (const [name, store, group, clients] of cases) {
      const r = await turns(store(), group, clients, ms);
      if (name === "sync, group commit, 1 client") lowLoadP50 = r.p50;
      const vsRaw = name.startsWith("sync") && clients === 1 ? `${fmt(r.p50 / raw.p50, 2)}× raw p50` : "";
      rows.push([`turn: ${name}`, fmt(r.perSec, 0), fmt(r.p50 * 1000, 0), fmt(r.p99 * 1000, 0), vsRaw]);
    }
    const ch = await channel(dir, quick ? 20_000 : 100_000);
    rows.push([
      "channel a → b over loopback TCP, both sync, group commit",
      fmt(ch.perSec, 0),
      "",
      "",
      "msgs/s, each a turn at both ends",
    ]);
    return [
      table(["what", "turns/s", "p50 µs", "p99 µs", "note"], rows),
      "",
      `Targets: ≥ 20,000 turns/s with group commit under concurrent load; p50 turn latency at low load within 2× one raw sync commit (here ${fmt(lowLoadP50 / raw.p50, 2)}×).`,
    ].join("\n");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
