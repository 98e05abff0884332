import { Etcd3 } from "etcd3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Cluster, startFaultline } from "../../bench/clusters.ts";
import { Client, stableLeader } from "../../bench/coord.ts";
import { Processes } from "../fixtures/processes.ts";

describe("coordination sessions on real processes", () => {
  const procs = new Processes();
  let fl: Cluster | undefined;

  beforeAll(async () => {
    fl = await startFaultline({ durability: "sync", agent: true });
    const clients = fl.endpoints.map((e) => new Client(e));
    try {
      await stableLeader(clients);
    } finally {
      for (const c of clients) c.close();
    }
  }, 60_000);

  afterAll(async () => {
    await procs.killAll();
    await fl?.stop();
  });

  it("an ephemeral key goes when its owner is SIGKILLed — on the agent's certain report, not after the lease's TTL", async () => {
    const a = fl!.agent!;
    const { proc } = await procs.startTs<{ pid: number; lease: string }>("test/fixtures/session-owner.ts", [
      "app1",
      a.keyHex,
      a.id,
      a.socket,
      fl!.endpoints[0]!,
      "locks/app1",
    ]);
    const client = new Etcd3({ hosts: fl!.endpoints.map((e) => `http://${e}`) });
    try {
      expect(await client.get("locks/app1").string()).toBe("app1");
      const watcher = await client.watch().key("locks/app1").create();
      const gone = new Promise<number>((resolve) => watcher.on("delete", () => resolve(performance.now())));
      const t0 = performance.now();
      proc.kill("SIGKILL");
      // The lease's TTL is 600 s: only the owner's exit can end it within this test's time.
      const at = await Promise.race([gone, new Promise<number>((r) => setTimeout(() => r(-1), 15_000))]);
      expect(at).toBeGreaterThan(0);
      console.log(
        `ephemeral key gone ${(at - t0).toFixed(1)} ms after its owner's SIGKILL (lease TTL 600 s)`,
      );
      expect(await client.get("locks/app1").string()).toBeNull();
      await watcher.cancel();
    } finally {
      client.close();
    }
  }, 60_000);
});
