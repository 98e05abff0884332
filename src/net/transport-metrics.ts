import { Counter, Gauge, type Registry } from "prom-client";
import type { Transport } from "./transport.ts";

const sources = new WeakMap<Registry, Set<Transport>>();

/**
 * Expose a transport's counters in a Prometheus registry. The hot path only bumps plain numbers;
 * prom-client reads them at scrape time (collect), so metrics cost nothing per message.
 */
export function registerTransportMetrics(registry: Registry, transport: Transport): () => void {
  let set = sources.get(registry);
  if (!set) {
    const all = new Set<Transport>();
    set = all;
    sources.set(registry, all);
    const each = (fn: (t: Transport) => void) => {
      for (const t of all) fn(t);
    };
    new Counter({
      name: "faultline_transport_messages_total",
      help: "Messages sent and received by the transport",
      labelNames: ["node", "direction"],
      registers: [registry],
      collect() {
        this.reset();
        each((t) => {
          const s = t.stats();
          this.inc({ node: t.id, direction: "sent" }, s.sent);
          this.inc({ node: t.id, direction: "received" }, s.received);
        });
      },
    });
    new Counter({
      name: "faultline_transport_bytes_total",
      help: "Bytes sent and received by the transport (frames included)",
      labelNames: ["node", "direction"],
      registers: [registry],
      collect() {
        this.reset();
        each((t) => {
          const s = t.stats();
          this.inc({ node: t.id, direction: "sent" }, s.bytesSent);
          this.inc({ node: t.id, direction: "received" }, s.bytesReceived);
        });
      },
    });
    new Counter({
      name: "faultline_transport_bad_frames_total",
      help: "Frames rejected by the frame check (bad magic, version, length, MAC, payload)",
      labelNames: ["node", "reason"],
      registers: [registry],
      collect() {
        this.reset();
        each((t) => {
          for (const [reason, n] of Object.entries(t.stats().badFrames)) this.inc({ node: t.id, reason }, n);
        });
      },
    });
    new Counter({
      name: "faultline_transport_dropped_total",
      help: "Messages dropped locally (queue overflow, stopped, destination down)",
      labelNames: ["node", "reason"],
      registers: [registry],
      collect() {
        this.reset();
        each((t) => {
          for (const [reason, n] of Object.entries(t.stats().dropped)) this.inc({ node: t.id, reason }, n);
        });
      },
    });
    new Counter({
      name: "faultline_transport_refreshes_total",
      help: "Fresh connections dialed to replace a stalled one (the peer reached only through a relay)",
      labelNames: ["node"],
      registers: [registry],
      collect() {
        this.reset();
        each((t) => this.inc({ node: t.id }, t.stats().refreshes));
      },
    });
    new Gauge({
      name: "faultline_transport_open_connections",
      help: "Sockets currently open (any state)",
      labelNames: ["node"],
      registers: [registry],
      collect() {
        this.reset();
        each((t) => this.set({ node: t.id }, t.stats().openConnections));
      },
    });
  }
  set.add(transport);
  const owned = set;
  return () => owned.delete(transport);
}

export function emptyStats(): ReturnType<Transport["stats"]> {
  return {
    sent: 0,
    received: 0,
    bytesSent: 0,
    bytesReceived: 0,
    badFrames: {},
    dropped: {},
    openConnections: 0,
    refreshes: 0,
  };
}

export function bump(rec: Record<string, number>, key: string, n = 1): void {
  rec[key] = (rec[key] ?? 0) + n;
}
