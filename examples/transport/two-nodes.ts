// Two faultline nodes over real TCP on 127.0.0.1: authenticated frames, typed connection events.
// Run: npx tsx examples/transport/two-nodes.ts
import { randomBytes } from "node:crypto";
import { TcpTransport } from "../../src/index.ts";

const clusterKey = randomBytes(32); // every node of a cluster shares it
const alice = new TcpTransport({ id: "alice", clusterKey });
const bob = new TcpTransport({ id: "bob", clusterKey });
await Promise.all([alice.start(), bob.start()]);
alice.addPeer("bob", bob.address());

alice.on("connection", (e) => console.log(`alice sees bob: ${e.kind}${e.boot ? ` (boot ${e.boot})` : ""}`));
bob.on("message", (from, msg) => {
  console.log(`bob got ${JSON.stringify(msg)} from ${from}`);
  bob.send(from, { pong: (msg as { ping: number }).ping });
});
const answered = new Promise<void>((resolve) =>
  alice.on("message", (from, msg) => {
    console.log(`alice got ${JSON.stringify(msg)} from ${from}`);
    resolve();
  }),
);
alice.send("bob", { ping: 1 });
await answered;

await bob.stop(); // alice sees the connection end: "closed"
await new Promise((r) => setTimeout(r, 100));
await alice.stop();
console.log("stats:", JSON.stringify(alice.stats()));
