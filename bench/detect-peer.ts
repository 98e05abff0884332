// The victim of bench/detect.ts, in its own process: a faultline node that registers with a host
// agent (mode "agent"), runs SWIM (mode "swim"), or just holds TCP connections (mode "tcp").
// argv: mode id keyHex arg... ; prints {"pid","port"} when ready.
import { createServer } from "node:net";
import { AgentClient } from "../src/agent/agent-client.ts";
import { DetectionNode } from "../src/detect/detection-node.ts";
import { TcpTransport } from "../src/net/tcp-transport.ts";
import { realClock } from "../src/runtime/clock.ts";
import { createRng } from "../src/runtime/rng.ts";

const [mode, id, keyHex, ...rest] = process.argv.slice(2);
const key = Buffer.from(keyHex!, "hex");
const ready = (port: number) => process.stdout.write(`${JSON.stringify({ pid: process.pid, port })}\n`);

if (mode === "tcp") {
  const server = createServer((s) => s.on("error", () => {}));
  server.listen(0, "127.0.0.1", () => ready((server.address() as { port: number }).port));
} else {
  const t = new TcpTransport({ id: id!, clusterKey: key });
  await t.start();
  if (mode === "agent") {
    const [agentId, socketPath] = rest;
    const c = new AgentClient({ id: id!, agentId: agentId!, socketPath: socketPath!, clusterKey: key });
    await c.start();
    while (!c.connected()) await new Promise((r) => setTimeout(r, 2));
    await new Promise((r) => setTimeout(r, 20));
  } else {
    const seeds = JSON.parse(rest[0]!) as Record<string, { host: string; port: number }>;
    for (const [peer, addr] of Object.entries(seeds)) t.addPeer(peer, addr);
    new DetectionNode({
      id: id!,
      clock: realClock,
      rng: createRng(process.pid),
      transport: t,
      seeds: Object.keys(seeds),
      address: t.address(),
      learnAddress: (peer, addr) => t.addPeer(peer, addr),
    }).start();
  }
  ready(t.port());
}
