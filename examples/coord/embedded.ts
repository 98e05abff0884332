/**
 * A coordination member hosted in an application's own process (`CoordNode`): the application
 * reads, writes and watches through `node.member` with no network round trip to a member, while
 * etcd clients can still use the gRPC port beside it.
 *
 * Three members run here in one process for the example's sake (each would normally be its own
 * process or host; `faultline coord` is the same `CoordNode` behind a command line). The
 * application takes a lock with a compare-and-swap transaction — the key's create revision is
 * its fencing token — and a watch on another member sees the lock taken and released.
 *
 *   npx tsx examples/coord/embedded.ts
 */
import { randomBytes } from "node:crypto";
import { freePorts } from "../../src/cli/up-coord.ts";
import { CoordNode, type CoordPeer, type TxnResponse, type WatchEvent } from "../../src/index.ts";

async function until(cond: () => boolean, what: string, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`gave up after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const ports = await freePorts(6);
const members: CoordPeer[] = ["c1", "c2", "c3"].map((id, i) => ({
  id,
  raft: { host: "127.0.0.1", port: ports[i]! },
  client: { host: "127.0.0.1", port: ports[i + 3]! },
}));
const clusterKey = randomBytes(32); // the same on every member
const nodes: CoordNode[] = [];
try {
  for (const m of members)
    nodes.push(await CoordNode.start({ id: m.id, members, clusterKey, durability: "memory" }));
  const [app, , other] = nodes as [CoordNode, CoordNode, CoordNode];
  await until(() => app.member.leader !== undefined, "a leader");
  console.log(`leader: ${app.member.leader}; etcd clients may use 127.0.0.1:${app.clientPort}`);

  // Another member's watch on the lock's key.
  const seen: string[] = [];
  const stopWatch = other.member.watch(
    {
      key: "locks/report",
      end: undefined,
      prevKv: false,
      next: 1,
      send: (_rev, events: WatchEvent[]) => {
        for (const e of events) {
          seen.push(e.type);
          console.log(`  watch on ${other.member.id}: ${e.type} ${e.kv.key}`);
        }
      },
      compacted: () => {},
    },
    1,
  );

  // Take the lock: put the key only if it does not exist (create revision 0).
  const take = await app.member.write({
    c: "txn",
    req: {
      compare: [{ key: "locks/report", target: 1, result: 0, create_revision: 0 }],
      success: [{ request_put: { key: "locks/report", value: app.member.id } }],
      failure: [],
    },
  });
  const taken = (take.value as TxnResponse).succeeded;
  console.log(`lock taken: ${taken}, fencing token (its revision): ${take.revision}`);
  await until(() => seen.includes("put"), "the watch to see the lock taken");
  await app.member.write({ c: "del", req: { key: "locks/report" } });
  await until(() => seen.includes("delete"), "the watch to see the lock released");
  stopWatch();
} finally {
  await Promise.all(nodes.map((n) => n.stop()));
}
