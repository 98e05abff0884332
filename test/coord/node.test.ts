import { randomBytes } from "node:crypto";
import { createServer } from "node:net";
import * as grpc from "@grpc/grpc-js";
import { afterEach, describe, expect, it } from "vitest";
import { freePorts } from "../../src/cli/up-coord.ts";
import { etcdProto } from "../../src/coord/etcd-wire.ts";
import { CoordNode, type CoordNodeOptions, type CoordPeer } from "../../src/coord/node.ts";
import type { RangeResponse, WatchEvent } from "../../src/coord/types.ts";
import { isFaultlineError } from "../../src/runtime/errors.ts";
import { waitFor } from "../fixtures/processes.ts";

describe("CoordNode: a coordination member hosted in an application's process", () => {
  const nodes: CoordNode[] = [];
  afterEach(async () => {
    await Promise.all(nodes.splice(0).map((n) => n.stop()));
  });

  async function cluster(): Promise<{ members: CoordPeer[]; key: Buffer }> {
    const ports = await freePorts(6);
    const members = ["c1", "c2", "c3"].map((id, i) => ({
      id,
      raft: { host: "127.0.0.1", port: ports[i]! },
      client: { host: "127.0.0.1", port: ports[i + 3]! },
    }));
    return { members, key: randomBytes(32) };
  }

  /** Three members in this process, in memory, each with `options(member)` added; their peers. */
  async function startThree(options: (m: CoordPeer) => Partial<CoordNodeOptions>): Promise<CoordPeer[]> {
    const { members, key } = await cluster();
    for (const m of members)
      nodes.push(
        await CoordNode.start({ id: m.id, members, clusterKey: key, durability: "memory", ...options(m) }),
      );
    return members;
  }

  it("three in one process elect a leader, write through any member and serve etcd clients", async () => {
    // c1's gRPC port is left out: an application that uses the member directly.
    const members = await startThree((m) => (m.id === "c1" ? { clientPort: false } : {}));
    await waitFor(() => nodes.some((n) => n.member.raft.core.role === "leader"), "a leader");
    const [c1, c2, c3] = nodes as [CoordNode, CoordNode, CoordNode];
    expect(c1.server).toBeUndefined();
    expect(c1.clientPort).toBe(0);
    expect(c2.clientPort).toBe(members[1]!.client.port);

    const seen: WatchEvent[] = [];
    c3.member.watch(
      {
        key: "app/",
        end: "app0",
        prevKv: false,
        next: 1,
        send: (_rev, events) => seen.push(...events),
        compacted: () => {},
      },
      1,
    );
    // A write from whichever member: forwarded to the leader when it is not one.
    const w = await c1.member.write({ c: "put", req: { key: "app/config", value: "v1" } });
    expect(w.revision).toBeGreaterThan(1);
    // A linearizable read from another member sees it.
    const r = await c2.member.range({ key: "app/config" });
    expect((r.value as RangeResponse).kvs.map((kv) => kv.value)).toEqual(["v1"]);

    // An etcd client on c2's gRPC port writes; c1's application reads it without the network.
    const pb = etcdProto();
    const kv = new pb.KV(`127.0.0.1:${c2.clientPort}`, grpc.credentials.createInsecure());
    try {
      await new Promise<void>((resolve, reject) =>
        kv.Put({ key: Buffer.from("app/from-grpc"), value: Buffer.from("v2") }, (e: Error | null) =>
          e ? reject(e) : resolve(),
        ),
      );
    } finally {
      kv.close();
    }
    const both = await c1.member.range({ key: "app/", range_end: "app0" });
    expect((both.value as RangeResponse).kvs.map((kv) => [kv.key, kv.value])).toEqual([
      ["app/config", "v1"],
      ["app/from-grpc", "v2"],
    ]);
    await waitFor(() => seen.length === 2, "c3's watch to see both writes");
    expect(seen.map((e) => e.kv.key)).toEqual(["app/config", "app/from-grpc"]);

    await c1.stop();
    await c1.stop(); // idempotent
  });

  it("with busyPollMs, members poll while writes flow (the leader while one waits) and sleep when idle", async () => {
    await startThree(() => ({ clientPort: false, busyPollMs: 50 }));
    await waitFor(() => nodes.some((n) => n.member.raft.core.role === "leader"), "a leader");
    const leader = nodes.find((n) => n.member.raft.core.role === "leader")!;
    const poller = leader.poller!;
    for (let i = 0; i < 20; i++) {
      const before = poller.turns;
      await leader.member.write({ c: "put", req: { key: `k${i}`, value: "v" } });
      // The followers' acks come over TCP: the leader's loop turned at least once while waiting.
      expect(poller.turns).toBeGreaterThan(before);
      expect(leader.member.raft.waiting).toBe(false);
    }
    // A follower polled after the appends that carried the writes.
    const followers = nodes.filter((n) => n !== leader);
    expect(followers.some((f) => f.poller!.turns > 0)).toBe(true);
    // Idle: past the budget nobody polls — heartbeats carry no entries and wake no one.
    await new Promise((r) => setTimeout(r, 150));
    const idle = nodes.map((n) => n.poller!.turns);
    await new Promise((r) => setTimeout(r, 200));
    expect(nodes.map((n) => n.poller!.turns)).toEqual(idle);
  });

  it("bad options are refused with a clear error, and a failed start leaves nothing listening", async () => {
    const { members, key } = await cluster();
    const refused = async (p: Promise<CoordNode>, what: RegExp) => {
      const e = await p.then(
        (started) => {
          nodes.push(started); // stopped after the test, which fails below
          return undefined;
        },
        (err: unknown) => err,
      );
      expect(isFaultlineError(e, "FL_BAD_CONFIG")).toBe(true);
      expect(String((e as Error).message)).toMatch(what);
    };
    await refused(
      CoordNode.start({ id: "c9", members, clusterKey: key, durability: "memory" }),
      /c9 is not one of the cluster's members \(c1, c2, c3\)/,
    );
    await refused(
      CoordNode.start({ id: "c1", members, clusterKey: key, durability: "sync" }),
      /needs a data directory/,
    );
    // c1's gRPC port is taken: the start fails, and its Raft port is free again afterwards.
    const blocker = createServer();
    await new Promise<void>((r) => blocker.listen(members[0]!.client.port, "127.0.0.1", () => r()));
    try {
      await refused(
        CoordNode.start({ id: "c1", members, clusterKey: key, durability: "memory" }),
        new RegExp(
          `cannot serve gRPC clients on 127.0.0.1:${members[0]!.client.port} .*choose another client port`,
        ),
      );
    } finally {
      await new Promise((r) => blocker.close(r));
    }
    const probe = createServer();
    await new Promise<void>((resolve, reject) => {
      probe.once("error", reject);
      probe.listen(members[0]!.raft.port, "127.0.0.1", () => resolve());
    });
    await new Promise((r) => probe.close(r));
  });
});
