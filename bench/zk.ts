/**
 * ZooKeeper beside faultline and etcd in the failover bench: the same measurement — a client
 * connected beforehand to each member that survives, SIGKILL (or SIGSTOP) the leader, the time
 * until the first acknowledged write — against a real 3-server ZooKeeper (bench/clusters.ts).
 *
 * The client is node-zookeeper-client (pure JavaScript, the widely used one). Its reconnect delay
 * (spinDelay) defaults to 1 s; it is set to 20 ms here so that what is measured is ZooKeeper's
 * own failover (its election and its followers' timeouts), not the client's back-off. Writes go
 * as for etcd and faultline: one at a time, to the survivors in turn, each given 100 ms.
 */
import { connect as tcpConnect } from "node:net";
import zookeeper from "node-zookeeper-client";
import type { Cluster } from "./clusters.ts";

const PATH = "/faultline-bench";
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const code = (e: Error | zookeeper.Exception) => (e instanceof zookeeper.Exception ? e.getCode() : undefined);

/** What a server says of itself (`srvr`, the four-letter word ZooKeeper allows by default). */
export function zkMode(endpoint: string, timeoutMs = 500): Promise<string | undefined> {
  const [host, port] = endpoint.split(":");
  return new Promise((resolve) => {
    let out = "";
    const s = tcpConnect({ host: host!, port: Number(port) }, () => s.write("srvr"));
    const done = (v: string | undefined) => {
      clearTimeout(t);
      s.destroy();
      resolve(v);
    };
    const t = setTimeout(() => done(undefined), timeoutMs);
    s.on("data", (d) => (out += d));
    s.on("end", () => done(/^Mode: (\w+)/m.exec(out)?.[1]));
    s.on("error", () => done(undefined));
  });
}

/** A client held open on one server (it reconnects to that server only). */
export class ZkClient {
  private readonly c: zookeeper.Client;
  private constructor(readonly endpoint: string) {
    this.c = zookeeper.createClient(endpoint, { sessionTimeout: 30_000, spinDelay: 20, retries: 0 });
  }

  static async open(endpoint: string, withinMs = 30_000): Promise<ZkClient> {
    const z = new ZkClient(endpoint);
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => {
        z.close();
        reject(new Error(`zookeeper: no session with ${endpoint} in ${withinMs} ms`));
      }, withinMs);
      z.c.once("connected", () => {
        clearTimeout(t);
        resolve();
      });
      z.c.connect();
    });
    return z;
  }

  /** Write `value` at the bench's znode (creating it the first time), or fail after `withinMs`. */
  set(value: Buffer, withinMs = 10_000): Promise<void> {
    // The client queues requests while it reconnects: bound the wait, as a deadline would.
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error("deadline")), withinMs);
      this.write(value).then(
        () => {
          clearTimeout(t);
          resolve();
        },
        (e) => {
          clearTimeout(t);
          reject(e);
        },
      );
    });
  }

  private write(value: Buffer): Promise<void> {
    return new Promise((resolve, reject) =>
      this.c.setData(PATH, value, -1, (e) => {
        if (!e) return resolve();
        if (code(e) !== zookeeper.Exception.NO_NODE) return reject(e);
        this.c.create(PATH, value, (e2) =>
          !e2 || code(e2) === zookeeper.Exception.NODE_EXISTS ? resolve() : reject(e2),
        );
      }),
    );
  }

  close(): void {
    this.c.close();
  }
}

/** Wait until one server leads and the others follow; return the leader's index. */
export async function zkStableLeader(c: Cluster, withinMs = 60_000): Promise<number> {
  const until = Date.now() + withinMs;
  while (Date.now() < until) {
    const modes = await Promise.all(c.endpoints.map((e) => zkMode(e)));
    const li = modes.indexOf("leader");
    if (li >= 0 && modes.filter((m) => m === "follower").length === modes.length - 1) return li;
    await sleep(100);
  }
  throw new Error(`zookeeper: no stable leader within ${withinMs / 1000} s`);
}

/** SIGKILL (or SIGSTOP) the leader; the time until a client of a survivor has a write acknowledged. */
export async function zkFailover(
  c: Cluster,
  fault: "SIGKILL" | "SIGSTOP",
  rounds: number,
): Promise<number[]> {
  const out: number[] = [];
  for (let r = 0; r < rounds; r++) {
    const li = await zkStableLeader(c);
    const survivors = c.endpoints.filter((_, i) => i !== li);
    const opened = await Promise.allSettled(survivors.map((e) => ZkClient.open(e)));
    const clients = opened.flatMap((o) => (o.status === "fulfilled" ? [o.value] : []));
    try {
      const failed = opened.find((o) => o.status === "rejected");
      if (failed) throw (failed as PromiseRejectedResult).reason;
      await clients[0]!.set(Buffer.from("ready"));
      await sleep(300);
      const victim = c.members[li]!;
      const t0 = performance.now(); // real-io: a benchmark measures wall time
      victim.proc.kill(fault);
      for (let k = 0; ; k++) {
        try {
          await clients[k % clients.length]!.set(Buffer.from(String(r)), 100);
          out.push(performance.now() - t0); // real-io
          break;
        } catch {
          if (performance.now() - t0 > 30_000)
            throw new Error(`zookeeper: no write acknowledged 30 s after ${fault}`); // real-io
        }
      }
      if (fault === "SIGKILL") victim.restart();
      else victim.proc.kill("SIGCONT");
    } finally {
      for (const cl of clients) cl.close();
    }
  }
  await zkStableLeader(c);
  return out;
}
