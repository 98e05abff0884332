// The far end of bench/transport.ts, in its own process. mode "raw": node:net with a 4-byte length
// prefix; mode "faultline": a TcpTransport. Both echo every message, or, when a message is a sink
// message, count it and ack every ACK_EVERY messages (one-way throughput with flow control); a
// reset message (kind 4) starts the count again. mode "grpc" (bench/coord.ts): etcd's KV service on
// grpc-js, as faultline serves it, whose Put answers at once — the floor under a put through gRPC.
import { createServer, type Socket } from "node:net";
import * as grpc from "@grpc/grpc-js";
import { etcdProto } from "../src/coord/etcd-wire.ts";
import { endUnaryAtOnce } from "../src/coord/grpc-server.ts";
import { TcpTransport } from "../src/net/tcp-transport.ts";

import { ACK_EVERY, rawFrames } from "./lib.ts";

const [mode, keyHex] = process.argv.slice(2);

if (mode === "raw") {
  const server = createServer((s: Socket) => {
    s.setNoDelay(true);
    let sunk = 0;
    s.on(
      "data",
      rawFrames((buf, off, len) => {
        const kind = buf[off + 4];
        if (kind === 1) {
          s.write(buf.subarray(off, off + 4 + len)); // echo
        } else if (kind === 4) {
          sunk = 0; // a new throughput run starts
        } else if (++sunk % ACK_EVERY === 0) {
          const ack = Buffer.alloc(9);
          ack.writeUInt32BE(5, 0);
          ack[4] = 3;
          ack.writeUInt32BE(sunk, 5);
          s.write(ack);
        }
      }),
    );
    s.on("error", () => {});
  });
  server.listen(0, "127.0.0.1", () => {
    process.stdout.write(`${JSON.stringify({ port: (server.address() as { port: number }).port })}\n`);
  });
} else if (mode === "grpc") {
  const server = new grpc.Server({ interceptors: [endUnaryAtOnce] });
  const header = { cluster_id: "1", member_id: "1", revision: "1", raft_term: "1" };
  server.addService(etcdProto().KV.service, {
    Put: (_call: unknown, done: (e: null, r: unknown) => void) => done(null, { header }),
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (e, p) =>
      e ? reject(e) : resolve(p),
    ),
  );
  process.stdout.write(`${JSON.stringify({ port })}\n`);
} else {
  const t = new TcpTransport({ id: "echo", clusterKey: Buffer.from(keyHex!, "hex") });
  let sunk = 0;
  t.on("message", (from, m) => {
    const msg = m as { k: number; p: Uint8Array };
    if (msg.k === 1) t.send(from, m);
    else if (msg.k === 4) sunk = 0;
    else if (++sunk % ACK_EVERY === 0) t.send(from, { k: 3, n: sunk });
  });
  await t.start();
  process.stdout.write(`${JSON.stringify({ port: t.port() })}\n`);
}
process.on("SIGTERM", () => process.exit(0));
