import { afterEach, describe, expect, it } from "vitest";
import { RaftNode } from "../../src/consensus/raft-node.ts";
import { VolatileStore } from "../../src/durable/store.ts";
import { TcpTransport } from "../../src/net/tcp-transport.ts";
import { realClock } from "../../src/runtime/clock.ts";
import { createRng } from "../../src/runtime/rng.ts";
import { RegisterMachine } from "../../src/sim/scenarios/raft.ts";
import { freeze, waitFor } from "../fixtures/processes.ts";

const KEY = Buffer.alloc(32, 9);

describe("a Raft follower that was itself paused", () => {
  const cleanup: Array<() => Promise<void> | void> = [];
  afterEach(async () => {
    for (const f of cleanup.splice(0).reverse()) await f();
  });

  it("reads the heartbeats that arrived meanwhile before it judges the leader silent", async () => {
    // "a" plays the leader by hand over a real connection; "b" is a RaftNode follower.
    const ta = new TcpTransport({ id: "a", clusterKey: KEY, port: 0 });
    const tb = new TcpTransport({ id: "b", clusterKey: KEY, port: 0 });
    await ta.start();
    await tb.start();
    cleanup.push(
      () => ta.stop(),
      () => tb.stop(),
    );
    ta.addPeer("b", tb.address());
    tb.addPeer("a", ta.address());
    const b = new RaftNode({
      id: "b",
      voters: ["a", "b", "c"],
      transport: tb,
      clock: realClock,
      rng: createRng(2),
      store: new VolatileStore(),
      stateMachine: new RegisterMachine(),
      raft: { suspectAfterMs: 200, electionTimeoutMs: 5000, heartbeatMs: 50 },
    });
    b.start();
    cleanup.push(() => b.stop());
    const fromB: string[] = [];
    ta.on("message", (_from, m) => fromB.push((m as { t: string }).t));
    const heartbeat = () =>
      // b first in the succession: a suspicion makes it stand at once (its pre-vote goes out).
      ta.send("b", { p: "raft", t: "hb", term: 1, commit: 0, read: 0, succ: ["b", "c"] });
    const beat = setInterval(heartbeat, 50);
    cleanup.push(() => clearInterval(beat));
    await waitFor(() => b.core.leader === "a" && fromB.includes("hb-r"), "b to follow a");

    for (let round = 0; round < 3; round++) {
      // A heartbeat goes out (the transport writes in a microtask), then the whole process stops
      // for 300 ms — longer than b's 200 ms suspicion, so b's timer is due when it runs again,
      // with that heartbeat waiting in its socket.
      // Frozen in the check phase, as a snapshot step or a commit is (Node's next turn then runs
      // due timers before it polls the sockets).
      await new Promise<void>((resolve) =>
        setImmediate(() => {
          heartbeat();
          queueMicrotask(() => queueMicrotask(() => freeze(300)));
          resolve();
        }),
      );
      await new Promise((r) => setTimeout(r, 150));
      expect(fromB.filter((t) => t === "vote")).toEqual([]); // no pre-vote: it never suspected a
      expect(b.core.leader).toBe("a");
      expect(b.core.role).toBe("follower");
    }
    // The last round's late timer, had it judged too soon, has fired by now.
    await new Promise((r) => setTimeout(r, 300));
    expect(fromB.filter((t) => t === "vote")).toEqual([]);
    expect(b.core.leader).toBe("a");
  });
});
