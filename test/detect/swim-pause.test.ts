import { afterEach, describe, expect, it } from "vitest";
import type { MemberStatus } from "../../src/membership/messages.ts";
import { SwimNode } from "../../src/membership/swim-node.ts";
import { TcpTransport } from "../../src/net/tcp-transport.ts";
import { realClock } from "../../src/runtime/clock.ts";
import { createRng } from "../../src/runtime/rng.ts";
import { freeze, Processes, waitFor } from "../fixtures/processes.ts";

const KEY = "cd".repeat(32);

describe("a SWIM member that was itself paused", () => {
  const procs = new Processes();
  const cleanup: Array<() => Promise<void> | void> = [];
  afterEach(async () => {
    for (const f of cleanup.splice(0).reverse()) await f();
    await procs.killAll();
  });

  it("reads the acks that arrived meanwhile before it times a probe out", async () => {
    // b answers from its own process, so its acks arrive while this one is frozen.
    const { first } = await procs.startTs<{ port: number }>("test/fixtures/swim-peer.ts", [
      "b",
      KEY,
      "100",
      "60",
    ]);
    const ta = new TcpTransport({ id: "a", clusterKey: Buffer.from(KEY, "hex") });
    await ta.start();
    cleanup.push(() => ta.stop());
    ta.addPeer("b", { host: "127.0.0.1", port: first.port });
    const a = new SwimNode({
      id: "a",
      clock: realClock,
      rng: createRng(3),
      transport: ta,
      seeds: ["b"],
      address: ta.address(),
      learnAddress: (peer, addr) => ta.addPeer(peer, addr),
      config: { probeIntervalMs: 100, probeTimeoutMs: 60 },
    });
    const seen: MemberStatus[] = [];
    a.on("member", (m) => {
      if (m.id === "b") seen.push(m.status);
    });
    a.start();
    cleanup.push(() => a.stop());
    await waitFor(() => a.members().some((m) => m.id === "b" && m.status === "alive"), "a to see b alive");
    seen.length = 0;

    // Each time a probes b, this process stops for 600 ms (ten probe timeouts) in the check
    // phase, as a long GC or snapshot step would: b's ack waits in the socket meanwhile.
    let pauses = 0;
    const send = ta.send.bind(ta);
    ta.send = (to, m) => {
      const sent = send(to, m);
      if (pauses < 3 && to === "b" && (m as { t?: string }).t === "ping") {
        pauses++;
        setImmediate(() => freeze(600));
      }
      return sent;
    };
    await waitFor(() => pauses === 3, "three probes of b, each followed by a pause", 10_000);
    await new Promise((r) => setTimeout(r, 300));
    expect(seen).toEqual([]); // never suspected
    expect(a.members().find((m) => m.id === "b")?.status).toBe("alive");
  });
});
