import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { RaftNode } from "../../src/consensus/raft-node.ts";
import { LmdbStore } from "../../src/durable/store.ts";
import { TcpTransport } from "../../src/net/tcp-transport.ts";
import { realClock } from "../../src/runtime/clock.ts";
import { DEFAULT_MAX_FRAME_BYTES } from "../../src/runtime/frame.ts";
import { createRng } from "../../src/runtime/rng.ts";
import { RegisterMachine } from "../../src/sim/scenarios/raft.ts";

const KEY = Buffer.alloc(32, 7);
const IDS = ["a", "b", "c"];

interface Member {
  id: string;
  transport: TcpTransport;
  raft: RaftNode;
  kv: RegisterMachine;
  store: LmdbStore;
}

async function waitFor(cond: () => boolean, what: string, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe("Raft over TCP with LMDB", () => {
  const dir = mkdtempSync(join(tmpdir(), "faultline-raft-tcp-"));
  const running = new Map<string, Member>();
  const ports = new Map<string, number>();

  afterEach(async () => {
    for (const m of running.values()) {
      m.raft.stop();
      await m.transport.stop();
      await m.store.close();
    }
    running.clear();
    rmSync(dir, { recursive: true, force: true });
  });

  async function start(
    id: string,
    compactEvery: number,
    extra: { compactAtBytes?: number; commitOffLoop?: boolean } = {},
  ): Promise<Member> {
    const transport = new TcpTransport({ id, clusterKey: KEY, port: ports.get(id) ?? 0 });
    await transport.start();
    const addr = transport.address();
    if ("port" in addr) ports.set(id, addr.port);
    for (const [other, m] of running) {
      transport.addPeer(other, m.transport.address());
      m.transport.addPeer(id, transport.address());
    }
    const store = LmdbStore.open(join(dir, id));
    const kv = new RegisterMachine();
    const raft = new RaftNode({
      id,
      voters: IDS,
      transport,
      clock: realClock,
      rng: createRng(IDS.indexOf(id) + 1),
      store,
      stateMachine: kv,
      compactEvery,
      ...extra,
    });
    raft.start();
    const m = { id, transport, raft, kv, store };
    running.set(id, m);
    return m;
  }

  async function stop(id: string): Promise<void> {
    const m = running.get(id)!;
    running.delete(id);
    m.raft.stop();
    await m.transport.stop();
    await m.store.close();
  }

  /** Three members up and a leader elected; returns who leads now (it may change). */
  async function cluster(compactEvery: number): Promise<() => Member> {
    for (const id of IDS) await start(id, compactEvery);
    await waitFor(() => [...running.values()].some((m) => m.raft.core.role === "leader"), "a leader");
    return () => [...running.values()].find((m) => m.raft.core.role === "leader")!;
  }

  /** One follower stopped while 45 puts of 200 KiB (9 MiB in all) go in; then it comes back. */
  async function awayDuringBigWrites(leader: () => Member, compactEvery: number) {
    const behind = IDS.find((id) => id !== leader().id)!;
    await stop(behind);
    const value = "x".repeat(200 * 1024);
    for (let i = 0; i < 45; i++)
      await leader().raft.propose({ op: "put", key: `k${i}`, value: `${i}${value}` });
    const before = leader().raft.core.log.snapshotIndex;
    const back = await start(behind, compactEvery);
    await waitFor(() => back.kv.values.size === 45, `${behind} to catch up`, 30_000);
    expect(back.kv.values.get("k44")).toBe(`44${value}`);
    return { back, before };
  }

  it("a follower far behind catches up from a snapshot larger than a frame, sent in chunks", async () => {
    // The log is compacted every 10 entries, so the follower needs a snapshot.
    const leader = await cluster(10);
    const { back, before } = await awayDuringBigWrites(leader, 10);
    // Snapshots at about 10, 20 and 40 entries (each once the log since the last is as large as
    // it), shifted by the leader's phase among the members (staggered snapshots): the one the
    // follower gets holds 20 to 40 values of 200 KiB, more than a frame may carry.
    expect(before).toBeGreaterThan(20);
    expect(back.raft.core.log.snapshotIndex).toBe(before);
    // Stored in chunks of 1 MiB, the record saying how many bytes in all.
    const stored = back.store.load().get("snap") as { bytes: number; chunks: number };
    expect(stored.bytes).toBeGreaterThan(DEFAULT_MAX_FRAME_BYTES);
    expect(stored.chunks).toBe(Math.ceil(stored.bytes / (1024 * 1024)));
    // It was more than one frame could carry.
    expect([...back.kv.values.values()].reduce((n, v) => n + v.length, 0)).toBeGreaterThan(
      DEFAULT_MAX_FRAME_BYTES,
    );
    // And it keeps up from there on.
    await leader().raft.propose({ op: "put", key: "after", value: "1" });
    await waitFor(() => back.kv.values.get("after") === "1", "the next write");
  }, 60_000);

  it("a follower behind by more entries than a frame can carry catches up through several appends", async () => {
    const leader = await cluster(100_000);
    const { before } = await awayDuringBigWrites(leader, 100_000);
    expect(before).toBe(0);
  }, 60_000);

  it("snapshots come less often as the state grows, so that their cost per write stays flat", async () => {
    const l = (await cluster(1))();
    const taken = new Set<number>();
    const value = "x".repeat(100 * 1024);
    for (let i = 0; i < 40; i++) {
      await l.raft.propose({ op: "put", key: `k${i}`, value });
      taken.add(l.raft.core.log.snapshotIndex);
    }
    // Every entry would be a snapshot (compactEvery 1) were it not for the bytes rule: a snapshot
    // waits for as many bytes of log as the last one took, which here grows with every put.
    expect(taken.size).toBeGreaterThan(3);
    expect(taken.size).toBeLessThan(20);
  }, 30_000);

  it("large entries compact the log before the entry count says so, which bounds it in memory", async () => {
    for (const id of IDS) await start(id, 1_000_000, { compactAtBytes: 1024 * 1024 });
    await waitFor(() => [...running.values()].some((m) => m.raft.core.role === "leader"), "a leader");
    const l = [...running.values()].find((m) => m.raft.core.role === "leader")!;
    const value = "x".repeat(100 * 1024);
    let most = 0;
    for (let i = 0; i < 40; i++) {
      await l.raft.propose({ op: "put", key: `k${i}`, value });
      most = Math.max(most, l.raft.core.log.lastIndex() - l.raft.core.log.snapshotIndex);
    }
    // 4 MiB of values against a 1 MiB cap: snapshots, though 40 entries are far below the count.
    expect(l.raft.core.log.snapshotIndex).toBeGreaterThan(10);
    // Between snapshots the log holds as much as the state at most (the bytes rule), never all 40.
    expect(most).toBeLessThan(40);
  }, 30_000);

  it("a damaged log entry in the store stops the member at start with a clear error", async () => {
    const store = LmdbStore.open(join(dir, "damaged"));
    try {
      store.commit(new Map([["e/0000000000000001", new Uint8Array([0xc1, 0x00])]]));
      const transport = new TcpTransport({ id: "a", clusterKey: KEY });
      expect(
        () =>
          new RaftNode({
            id: "a",
            voters: IDS,
            transport,
            clock: realClock,
            rng: createRng(1),
            store,
            stateMachine: new RegisterMachine(),
          }),
      ).toThrow(/e\/0000000000000001 .*does not decode: the store is damaged/);
    } finally {
      await store.close();
    }
  });

  it("writes go to disk off the event loop, and every acknowledged one is there after a restart", async () => {
    for (const id of IDS) await start(id, 100_000, { commitOffLoop: true });
    await waitFor(() => [...running.values()].some((m) => m.raft.core.role === "leader"), "a leader");
    const leader = () => [...running.values()].find((m) => m.raft.core.role === "leader")!;
    const l = leader();
    // Count the store's batches: with an fdatasync in flight, later proposals queue for the next.
    let batches = 0;
    const commitAsync = l.store.commitAsync.bind(l.store);
    l.store.commitAsync = (w) => {
      batches++;
      return commitAsync(w);
    };
    const n = 300;
    const acked = await Promise.all(
      Array.from({ length: n }, (_, i) => l.raft.propose({ op: "put", key: `k${i}`, value: `v${i}` })),
    );
    expect(acked).toHaveLength(n);
    expect(batches).toBeGreaterThan(0);
    expect(batches).toBeLessThan(n / 4);
    // Everyone down; back up from what each wrote to its disk alone.
    for (const id of IDS) await stop(id);
    await cluster(100_000);
    for (const m of running.values()) {
      await waitFor(() => m.kv.values.size === n, `${m.id} to replay its log`);
      expect(m.kv.values.get(`k${n - 1}`)).toBe(`v${n - 1}`);
    }
  }, 60_000);

  it("a proposal too large for one log entry fails at once with a clear error", async () => {
    const l = (await cluster(10))();
    await expect(
      l.raft.propose({ op: "put", key: "big", value: "x".repeat(4 * 1024 * 1024) }),
    ).rejects.toThrow(/larger than the \d+ a log entry may take/);
    await l.raft.propose({ op: "put", key: "small", value: "y" });
  }, 30_000);
});
