/**
 * One process of the durable pipeline (examples/durable/pipeline.ts starts three). It waits for
 * one JSON line on stdin — its role, store directory, ports and the cluster key — so that a
 * launcher can start it ahead of time and bring it to life the moment it is needed.
 */
import { createInterface } from "node:readline";
import { DurableProcess } from "../../src/durable/process.ts";
import { LmdbStore } from "../../src/durable/store.ts";
import { TcpTransport } from "../../src/net/tcp-transport.ts";
import type { Address } from "../../src/net/transport.ts";
import { realClock } from "../../src/runtime/clock.ts";
import { audit, bank, source } from "./bank.ts";

interface Config {
  role: "source" | "bank" | "audit";
  dir: string;
  ports: Record<string, number>;
  key: string;
  /** Transfers the source produces in all. */
  n: number;
  groupCommit?: boolean;
}

const line = await new Promise<string>((resolve) => {
  const rl = createInterface({ input: process.stdin });
  rl.once("line", resolve);
  // The launcher holds our stdin open for as long as it lives: when it goes, so do we.
  rl.once("close", () => process.exit(1));
});
const c = JSON.parse(line) as Config;
const say = (what: object) => process.stdout.write(`${JSON.stringify({ role: c.role, ...what })}\n`);
const peers: Record<string, Address> = {};
for (const [role, port] of Object.entries(c.ports))
  if (role !== c.role) peers[role] = { host: "127.0.0.1", port };
const transport = new TcpTransport({
  id: c.role,
  clusterKey: Buffer.from(c.key, "hex"),
  port: c.ports[c.role]!,
  peers,
  reconnectInitialMs: 10,
  reconnectMaxMs: 100,
});
await transport.start();
const store = LmdbStore.open(c.dir);
const handlers =
  c.role === "source"
    ? source("bank", c.n)
    : c.role === "bank"
      ? bank("audit")
      : audit((l) => say(JSON.parse(l)));
const p = new DurableProcess<unknown>({
  id: c.role,
  transport,
  clock: realClock,
  store,
  handlers: handlers as never,
  groupCommit: c.groupCommit ?? true,
});
p.start();
say({ started: true, state: p.state });

if (c.role === "source") {
  // Produce until n, keeping at most a few thousand transfers unacknowledged.
  const produce = () => {
    const s = p.state as { n: number };
    const queued = p.unacked().get("bank") ?? 0;
    for (let k = 0; k < 200 && s.n + k < c.n && queued + k < 4000; k++) p.submit("tick");
    setTimeout(produce, (p.state as { n: number }).n >= c.n ? 100 : 1);
  };
  produce();
}

process.on("SIGTERM", () => {
  p.stop();
  void Promise.all([transport.stop(), store.close()]).then(() => process.exit(0));
});
