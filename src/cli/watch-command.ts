import { request } from "node:http";
import type { Command } from "commander";
import { z } from "zod";
import { validate } from "./options.ts";

const Admin = z
  .string()
  .regex(/^[^:\s]+:\d{1,5}$/, "use host:port of a node's admin endpoint (faultline node --admin-port)");

function get(
  admin: string,
  path: string,
  onChunk: (s: string) => void,
  onOpen?: () => void,
): Promise<number> {
  const [host, port] = admin.split(":");
  return new Promise((resolve, reject) => {
    const req = request({ host, port: Number(port), path, method: "GET" }, (res) => {
      onOpen?.();
      res.setEncoding("utf8");
      res.on("data", onChunk);
      res.on("end", () => resolve(res.statusCode ?? 0));
    });
    req.on("error", (e) => reject(new Error(`cannot reach the admin endpoint at ${admin}: ${e.message}`)));
    req.end();
  });
}

export function registerWatch(program: Command): void {
  program
    .command("watch")
    .description("stream a running node's failure reports as JSON lines")
    .requiredOption("--admin <host:port>", "the node's admin endpoint")
    .option("--kind <kinds>", "only these kinds (comma-separated)")
    .option("--certainty <c>", "only certain or suspected")
    .option("--subject <ids>", "only about these nodes (comma-separated)")
    .action(async (raw) => {
      const admin = validate(Admin, raw.admin, "--admin");
      const q = new URLSearchParams();
      for (const k of ["kind", "certainty", "subject"] as const) if (raw[k]) q.set(k, raw[k]);
      const status = await get(
        admin,
        `/watch?${q}`,
        (s) => process.stdout.write(s),
        () => process.stderr.write(`# watching ${admin}: current failures first, then every report\n`),
      );
      if (status !== 200) process.exitCode = 2;
    });

  program
    .command("status")
    .description(
      "print a running node's view: members, current failure reports and the broken paths it knows of",
    )
    .requiredOption("--admin <host:port>", "the node's admin endpoint")
    .option("--json", "print the raw JSON", false)
    .action(async (raw) => {
      const admin = validate(Admin, raw.admin, "--admin");
      let body = "";
      const code = await get(admin, "/status", (s) => {
        body += s;
      });
      if (code !== 200) throw new Error(`the admin endpoint answered ${code}: ${body.trim()}`);
      if (raw.json) {
        process.stdout.write(body);
        return;
      }
      const s = JSON.parse(body) as {
        id: string;
        incarnation: number;
        localHealth: number;
        members: Array<{ id: string; status: string; incarnation: number }>;
        reports: Array<{
          subject: string;
          kind: string;
          certainty: string;
          detector: string;
          evidence: Array<{ what: string }>;
        }>;
        unreachable?: Array<{ from: string; to: string[] }>;
      };
      console.log(`node ${s.id} (incarnation ${s.incarnation}, local health ${s.localHealth})`);
      console.log("");
      console.log("member               status    incarnation");
      for (const m of s.members.sort((a, b) => a.id.localeCompare(b.id))) {
        console.log(`${m.id.padEnd(20)} ${m.status.padEnd(9)} ${m.incarnation}`);
      }
      console.log("");
      if (s.reports.length === 0) console.log("no current failure reports");
      for (const r of s.reports) {
        console.log(
          `${r.subject}: ${r.kind} (${r.certainty}) by ${r.detector} [${r.evidence.map((e) => e.what).join("; ")}]`,
        );
      }
      // The gossiped reachability matrix: every member's failed direct probes, not only this node's.
      console.log("");
      const rows = s.unreachable ?? [];
      if (rows.length === 0)
        console.log("every member reaches every other directly (as far as this node knows)");
      for (const r of rows) console.log(`${r.from} cannot reach ${r.to.join(", ")} directly`);
    });
}
