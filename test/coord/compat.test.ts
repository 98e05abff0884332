import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Etcd3 } from "etcd3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Cluster, have, startEtcd, startFaultline } from "../../bench/clusters.ts";

const available = have("etcd") && have("etcdctl");
if (!available)
  console.warn("etcd compatibility tests skipped: install etcd-server and etcd-client (apt-get)");

function etcdctl(c: Cluster, args: string[], o: { input?: string; timeoutMs?: number } = {}) {
  const r = spawnSync("etcdctl", ["--endpoints", c.endpoints.join(","), "--command-timeout", "5s", ...args], {
    env: { ...process.env, ETCDCTL_API: "3" },
    input: o.input ?? "",
    timeout: o.timeoutMs ?? 15_000,
    encoding: "utf8",
  });
  // etcdctl's client logs retries as JSON lines on stderr; the user-facing result is the rest.
  const err = r.stderr
    .split("\n")
    .filter((l) => l && !l.startsWith("{"))
    .join("\n");
  return { out: r.stdout, err, status: r.status };
}

/** What differs between two clusters for no semantic reason: ids, ports, remaining seconds. */
function normalize(text: string, c: Cluster): string {
  let t = text
    .replace(/\b[0-9a-f]{13,16}\b/g, "<ID>")
    .replace(/remaining\(\d+s\)/g, "remaining(Ns)")
    // Identities and the election count are each cluster's own.
    .replace(/"(ClusterID|MemberID|RaftTerm)" : \d+/g, '"$1" : <N>');
  for (const m of c.members) t = t.replaceAll(`:${m.clientPort}`, ":<PORT>");
  return t.replace(/127\.0\.0\.1:\d+/g, "127.0.0.1:<PORT>");
}

async function ready(c: Cluster): Promise<void> {
  const until = Date.now() + 30_000;
  while (Date.now() < until) {
    if (etcdctl(c, ["get", "nothing"], { timeoutMs: 3000 }).status === 0) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`${c.kind} cluster not ready within 30 s`);
}

/** A session of etcdctl commands; each step's normalised output. */
function session(c: Cluster): string[] {
  const out: string[] = [];
  const run = (args: string[], input?: string) => {
    const r = etcdctl(c, args, input === undefined ? {} : { input });
    out.push(normalize(`$ etcdctl ${args.join(" ")}\n${r.out}${r.err}[exit ${r.status}]`, c));
    return r;
  };
  run(["put", "a", "1"]);
  run(["put", "b", "2"]);
  run(["put", "ab", "3"]);
  run(["get", "a"]);
  run(["get", "a", "--prefix"]);
  run(["get", "", "--from-key", "--keys-only"]);
  run(["get", "a", "--prefix", "--limit", "1", "--order", "DESCEND"]);
  run(["get", "a", "--rev", "2"]);
  run(["put", "--prev-kv", "b", "22"]);
  run(["del", "ab"]);
  run(["del", "zz"]);
  run(["get", "a", "--prefix", "-w", "fields"]);
  run(["txn"], 'value("b") = "22"\n\nput c yes\n\nput c no\n\n');
  run(["txn"], 'version("a") > "5"\n\nput d yes\n\nput d no\n\n');
  run(["get", "c", "d"]);
  run(["get", "c"]);
  run(["get", "d"]);
  const grant = run(["lease", "grant", "100"]);
  const lease = /lease ([0-9a-f]+) granted/.exec(grant.out)?.[1] ?? "0";
  run(["put", `--lease=${lease}`, "e", "1"]);
  run(["lease", "timetolive", lease, "--keys"]);
  run(["lease", "list"]);
  run(["lease", "revoke", lease]);
  run(["get", "e"]);
  run(["lease", "timetolive", lease]);
  run(["put", "--lease=1234", "f", "1"]);
  // Everything so far, as a watch from the first revision sees it.
  const w = spawnSync(
    "etcdctl",
    ["--endpoints", c.endpoints.join(","), "watch", "--rev", "1", "--prefix", ""],
    {
      env: { ...process.env, ETCDCTL_API: "3" },
      timeout: 2500,
      encoding: "utf8",
    },
  );
  out.push(`$ etcdctl watch --rev 1 --prefix ""\n${normalize(w.stdout, c)}`);
  run(["compaction", "5"]);
  run(["get", "a", "--rev", "3"]);
  run(["get", "a", "--rev", "999"]);
  const members = etcdctl(c, ["member", "list"]);
  out.push(`$ etcdctl member list\n${normalize(members.out, c).split("\n").sort().join("\n")}`);
  return out;
}

describe.skipIf(!available)(
  "etcd compatibility: etcdctl and the etcd3 package against faultline and a real etcd",
  () => {
    let fl: Cluster | undefined;
    let et: Cluster | undefined;

    beforeAll(async () => {
      [fl, et] = await Promise.all([startFaultline({ durability: "sync" }), startEtcd()]);
      await Promise.all([ready(fl), ready(et)]);
    }, 60_000);

    afterAll(async () => {
      await Promise.all([fl?.stop(), et?.stop()]);
    });

    it("etcdctl put/get/del/txn/watch/lease/compaction/member list give the same results", () => {
      const ours = session(fl!);
      const theirs = session(et!);
      for (let i = 0; i < theirs.length; i++) expect(ours[i]).toBe(theirs[i]);
      // endpoint status: one row per member, exactly one leader.
      for (const c of [fl!, et!]) {
        const rows = etcdctl(c, ["endpoint", "status"]).out.trim().split("\n");
        expect(rows).toHaveLength(3);
        expect(rows.filter((r) => r.split(", ")[4] === "true")).toHaveLength(1);
      }
    }, 120_000);

    it("the etcd3 package gives the same results", async () => {
      const drive = async (c: Cluster) => {
        const client = new Etcd3({ hosts: c.endpoints.map((e) => `http://${e}`) });
        try {
          const seen: string[] = [];
          const watcher = await client.watch().prefix("w/").create();
          watcher.on("put", (kv) => seen.push(`put ${kv.key.toString()}=${kv.value.toString()}`));
          watcher.on("delete", (kv) => seen.push(`delete ${kv.key.toString()}`));
          await client.put("w/1").value("one");
          await client.put("w/2").value("two");
          const one = await client.get("w/1").string();
          const all = await client.getAll().prefix("w/").strings();
          const count = await client.getAll().prefix("w/").count();
          const txn = await client
            .if("w/1", "Value", "==", "one")
            .then(client.put("w/3").value("three"))
            .else(client.put("w/3").value("else"))
            .commit();
          const lease = client.lease(30, { autoKeepAlive: false });
          await lease.put("w/eph").value("x");
          const ttl = await client.get("w/eph").string();
          await lease.revoke();
          const gone = await client.get("w/eph").string();
          const deleted = await client.delete().key("w/2");
          // Larger than a request may be (1.5 MiB by default): refused, with etcd's words.
          const tooLarge = await client
            .put("w/big")
            .value(Buffer.alloc(1600 * 1024, 0x62))
            .then(
              () => "accepted",
              (e: Error) => e.message,
            );
          // More operations than a transaction may hold (128 by default).
          const tooMany = await client
            .if("w/1", "Value", "==", "one")
            .then(...Array.from({ length: 129 }, (_, i) => client.put(`w/m${i}`).value("x")))
            .commit()
            .then(
              () => "accepted",
              (e: Error) => e.message,
            );
          await new Promise((r) => setTimeout(r, 300));
          await watcher.cancel();
          return {
            one,
            all,
            count,
            succeeded: txn.succeeded,
            ttl,
            gone,
            deleted: Number(deleted.deleted),
            tooLarge,
            tooMany,
            seen,
          };
        } finally {
          client.close();
        }
      };
      const ours = await drive(fl!);
      const theirs = await drive(et!);
      expect(ours).toEqual(theirs);
      expect(ours.seen).toContain("put w/1=one");
      expect(ours.tooLarge).toMatch(/request is too large/);
      expect(ours.tooMany).toMatch(/too many operations in txn request/);
    }, 60_000);

    it("etcdctl's lock and election recipes (leases, transactions, watches) behave the same", async () => {
      for (const c of [fl!, et!]) {
        const ep = c.endpoints.join(",");
        const dir = mkdtempSync(join(tmpdir(), "faultline-lock-"));
        const log = join(dir, "log");
        try {
          // A holds the lock for a while; B asks meanwhile and must get it only after A let go.
          const a = spawn(
            "etcdctl",
            [
              "--endpoints",
              ep,
              "lock",
              "mylock",
              "--",
              "sh",
              "-c",
              `echo A-in >> ${log}; sleep 0.5; echo A-out >> ${log}`,
            ],
            {
              env: { ...process.env, ETCDCTL_API: "3" },
              stdio: "ignore",
            },
          );
          while (!existsSync(log)) await new Promise((r) => setTimeout(r, 20));
          const b = spawnSync(
            "etcdctl",
            ["--endpoints", ep, "lock", "mylock", "--", "sh", "-c", `echo B-in >> ${log}`],
            {
              env: { ...process.env, ETCDCTL_API: "3" },
              timeout: 15_000,
            },
          );
          await new Promise((r) => (a.exitCode !== null ? r(undefined) : a.once("exit", r)));
          expect(b.status).toBe(0);
          expect(readFileSync(log, "utf8").trim().split("\n")).toEqual(["A-in", "A-out", "B-in"]);
          // An election: a campaigner wins, and an observer sees its proposal.
          const cand = spawn("etcdctl", ["--endpoints", ep, "elect", "myelection", "p1"], {
            env: { ...process.env, ETCDCTL_API: "3" },
            stdio: ["ignore", "pipe", "ignore"],
          });
          let won = "";
          cand.stdout.on("data", (d) => {
            won += d;
          });
          while (!won.includes("p1")) await new Promise((r) => setTimeout(r, 20));
          const seen = spawnSync("etcdctl", ["--endpoints", ep, "elect", "-l", "myelection"], {
            env: { ...process.env, ETCDCTL_API: "3" },
            timeout: 2000,
            encoding: "utf8",
          });
          cand.kill("SIGKILL");
          expect(normalize(seen.stdout, c)).toBe("myelection/<ID>\np1\n");
        } finally {
          rmSync(dir, { recursive: true, force: true });
        }
      }
    }, 60_000);

    it("what faultline does not serve answers at once with a clear status, never a hang", () => {
      const r = etcdctl(fl!, ["member", "add", "c4", "--peer-urls=http://127.0.0.1:1"], {
        timeoutMs: 10_000,
      });
      expect(r.status).not.toBe(0);
      expect(r.err).toMatch(/faultline does not serve Cluster\.MemberAdd/);
    });
  },
);
