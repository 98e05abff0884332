/**
 * A TCP relay that can flip bits: the lab's stand-in for a corrupting path (this kernel has no
 * netem). It listens on one address and forwards every connection to another, both ways. While
 * on (a line "on" on stdin; "off" turns it off), each chunk it forwards has one random bit
 * flipped with probability `--rate`.
 *
 *   node --import tsx lab/corrupt-relay.ts --listen 10.77.0.1:7301 --to 10.77.0.3:7000 [--rate 0.3]
 */
import { connect, createServer, type Socket } from "node:net";
import { createInterface } from "node:readline";
import { parseArgs } from "node:util";

const { values } = parseArgs({
  options: { listen: { type: "string" }, to: { type: "string" }, rate: { type: "string", default: "0.3" } },
});
const split = (a: string | undefined, what: string): [string, number] => {
  const m = /^(.+):(\d+)$/.exec(a ?? "");
  if (!m) {
    console.error(`--${what} must be host:port`);
    process.exit(2);
  }
  return [m[1]!, Number(m[2])];
};
const [lhost, lport] = split(values.listen, "listen");
const [thost, tport] = split(values.to, "to");
const rate = Number(values.rate);
let on = false;
let flipped = 0;

function pipe(from: Socket, to: Socket): void {
  from.on("data", (chunk: Buffer) => {
    if (on && Math.random() < rate) {
      const bit = Math.floor(Math.random() * chunk.length * 8);
      chunk[bit >> 3]! ^= 1 << (bit & 7);
      flipped++;
    }
    if (!to.write(chunk)) {
      from.pause();
      to.once("drain", () => from.resume());
    }
  });
  from.on("end", () => to.end());
  from.on("error", () => to.destroy());
  from.on("close", () => to.destroy());
}

const server = createServer((inbound) => {
  const outbound = connect(tport, thost);
  pipe(inbound, outbound);
  pipe(outbound, inbound);
});
server.listen(lport, lhost, () => console.log(JSON.stringify({ listening: `${lhost}:${lport}` })));
createInterface({ input: process.stdin }).on("line", (l) => {
  if (l.trim() === "on") on = true;
  else if (l.trim() === "off") on = false;
  console.log(JSON.stringify({ on, flipped }));
});
process.stdin.on("end", () => process.exit(0));
