/**
 * One member of the FUSE example (examples/fuse/three.ts starts three). It registers with the
 * host agent, runs detection and FUSE, and prints JSON lines: {"ready"}, {"created"} (the creator),
 * {"failed", "reason"} when a group it belongs to fails.
 *
 * argv: id port peers(id=host:port,...) keyHex agentSocket agentId [create]
 */
import { AgentClient } from "../../src/agent/agent-client.ts";
import { parsePeers } from "../../src/cli/node-command.ts";
import { DetectionNode } from "../../src/detect/detection-node.ts";
import { FuseNode } from "../../src/fuse/fuse-node.ts";
import { TcpTransport } from "../../src/net/tcp-transport.ts";
import { realClock } from "../../src/runtime/clock.ts";
import { createRng } from "../../src/runtime/rng.ts";

const [id, port, peersText, keyHex, socketPath, agentId, create] = process.argv.slice(2) as string[];
const key = Buffer.from(keyHex!, "hex");
const peers = parsePeers(peersText);
const say = (m: object) => process.stdout.write(`${JSON.stringify({ id, at: realClock.wallNow(), ...m })}\n`);

const transport = new TcpTransport({ id: id!, clusterKey: key, port: Number(port), peers });
await transport.start();
const agent = new AgentClient({
  id: id!,
  agentId: agentId!,
  socketPath: socketPath!,
  clusterKey: key,
  boot: transport.boot,
});
await agent.start();
let fuse: FuseNode | undefined;
const detection = new DetectionNode({
  id: id!,
  clock: realClock,
  rng: createRng(process.pid),
  transport,
  seeds: Object.keys(peers),
  address: transport.address(),
  learnAddress: (peer, addr) => transport.addPeer(peer, addr),
  boot: transport.boot,
  swim: { probeIntervalMs: 200, probeTimeoutMs: 100 },
  extension: (peer) => fuse?.digest(peer),
});
fuse = new FuseNode({ id: id!, boot: transport.boot, transport, clock: realClock, detection });
detection.start();
fuse.start();
fuse.onFailure((n) => say({ failed: n.group, reason: n.reason }));

const members = Object.keys(peers).filter((p) => !p.startsWith("agent:"));
const allAlive = () =>
  members.every((m) => detection.swim.members().some((x) => x.id === m && x.status === "alive"));
while (!allAlive() || !agent.connected()) await new Promise((r) => setTimeout(r, 20));
say({ ready: true });
if (create === "create") say({ created: await fuse.create(members) });

// SIGUSR2: the application decides its groups have failed (an explicit signal, with a payload).
process.on("SIGUSR2", () => {
  for (const g of fuse?.core.activeGroups() ?? []) fuse?.signal(g, { why: "operator asked" });
});
process.on("SIGTERM", () => {
  fuse?.stop();
  detection.stop();
  void Promise.all([agent.stop(), transport.stop()]).then(() => process.exit(0));
});
