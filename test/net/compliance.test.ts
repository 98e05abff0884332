import { SimNetwork } from "../../src/net/sim-network.ts";
import { SimTransport } from "../../src/net/sim-transport.ts";
import { TcpTransport } from "../../src/net/tcp-transport.ts";
import type { Transport } from "../../src/net/transport.ts";
import { createRng } from "../../src/runtime/rng.ts";
import { VirtualClock } from "../../src/runtime/virtual-clock.ts";
import { transportCompliance } from "./transport-compliance.ts";

const KEY = Buffer.alloc(32, 3);

transportCompliance("tcp", () => {
  const made: Transport[] = [];
  return {
    async make(ids) {
      const ts = ids.map((id) => new TcpTransport({ id, clusterKey: KEY }));
      await Promise.all(ts.map((t) => t.start()));
      for (const t of ts) for (const u of ts) if (t !== u) t.addPeer(u.id, u.address());
      made.push(...ts);
      return ts;
    },
    async waitFor(cond, what, ms = 10_000) {
      const end = Date.now() + ms;
      while (!cond()) {
        if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 2));
      }
    },
    async cleanup() {
      await Promise.all(made.map((t) => t.stop()));
    },
  };
});

transportCompliance("simulated", () => {
  const clock = new VirtualClock();
  const net = new SimNetwork(clock, createRng(1));
  const made: Transport[] = [];
  return {
    async make(ids) {
      const ts = ids.map((id) => new SimTransport({ id, network: net, clusterKey: KEY }));
      await Promise.all(ts.map((t) => t.start()));
      made.push(...ts);
      return ts;
    },
    async waitFor(cond, what, ms = 10_000) {
      const end = clock.now() + ms;
      while (!cond()) {
        if (clock.now() > end) throw new Error(`timed out waiting for ${what} (virtual time)`);
        clock.advance(1);
      }
    },
    async cleanup() {
      await Promise.all(made.map((t) => t.stop()));
    },
  };
});
