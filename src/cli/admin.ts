import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { Registry } from "prom-client";
import type { DetectionNode } from "../detect/detection-node.ts";
import { FAILURE_KINDS, type FailureKind, matches, type ReportFilter } from "../detect/report.ts";

/**
 * A node's admin endpoint (loopback by default): what `faultline status` and `faultline watch` read.
 *   GET /status   the node's membership view and current failure reports (JSON)
 *   GET /watch    the current failure reports, then every report from now on, one JSON object per
 *                 line (?kind=&certainty=&subject=)
 *   GET /metrics  Prometheus exposition
 */
export async function startAdmin(o: {
  node: DetectionNode;
  registry?: Registry;
  host: string;
  port: number;
}): Promise<{ port: number; close(): Promise<void> }> {
  const server: Server = createServer((req, res) => {
    handle(o, req, res).catch((err) => {
      if (!res.headersSent) res.writeHead(500, { "content-type": "text/plain" });
      res.end(`error: ${(err as Error).message}\n`);
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(o.port, o.host, () => resolve());
  });
  const port = (server.address() as { port: number }).port;
  return {
    port,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

async function handle(
  o: { node: DetectionNode; registry?: Registry },
  req: IncomingMessage,
  res: ServerResponse,
): Promise<void> {
  const url = new URL(req.url ?? "/", "http://admin");
  if (req.method !== "GET") {
    res.writeHead(405, { "content-type": "text/plain" }).end("only GET\n");
    return;
  }
  switch (url.pathname) {
    case "/status": {
      const body = {
        id: o.node.id,
        incarnation: o.node.swim.core.incarnation,
        localHealth: o.node.swim.core.localHealth,
        members: o.node.swim
          .members()
          .map((m) => ({ id: m.id, status: m.status, incarnation: m.incarnation })),
        reports: o.node.monitor.snapshot(),
        // The broken paths as this node knows them, its own and those members gossiped.
        unreachable: o.node.reachability().map((r) => ({ from: r.o, to: r.u })),
      };
      res.writeHead(200, { "content-type": "application/json" }).end(`${JSON.stringify(body)}\n`);
      return;
    }
    case "/watch": {
      const filter: ReportFilter = {};
      const kind = url.searchParams.get("kind");
      if (kind) {
        const kinds = kind.split(",");
        const bad = kinds.filter((k) => !(FAILURE_KINDS as readonly string[]).includes(k));
        if (bad.length > 0) {
          res
            .writeHead(400, { "content-type": "text/plain" })
            .end(`unknown kind ${bad.join(", ")}: use ${FAILURE_KINDS.join(", ")}\n`);
          return;
        }
        filter.kind = kinds as FailureKind[];
      }
      const certainty = url.searchParams.get("certainty");
      if (certainty === "certain" || certainty === "suspected") filter.certainty = certainty;
      const subject = url.searchParams.get("subject");
      if (subject) filter.subject = subject.split(",");
      res.writeHead(200, { "content-type": "application/x-ndjson" });
      res.flushHeaders();
      for (const r of o.node.monitor.snapshot()) if (matches(filter, r)) res.write(`${JSON.stringify(r)}\n`);
      const off = o.node.monitor.subscribe(filter, (r) => res.write(`${JSON.stringify(r)}\n`));
      req.on("close", off);
      return;
    }
    case "/metrics": {
      if (!o.registry) {
        res.writeHead(404, { "content-type": "text/plain" }).end("no metrics registry\n");
        return;
      }
      res.writeHead(200, { "content-type": o.registry.contentType }).end(await o.registry.metrics());
      return;
    }
    default:
      res.writeHead(404, { "content-type": "text/plain" }).end("try /status, /watch or /metrics\n");
  }
}
