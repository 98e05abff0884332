import { randomBytes } from "node:crypto";
import { connect } from "node:net";
import { describe, expect, it } from "vitest";
import { TcpTransport } from "../src/net/tcp-transport.ts";
import { createRegistry } from "../src/runtime/metrics.ts";
import { waitFor } from "./fixtures/processes.ts";

describe("metrics", () => {
  it("transports expose their counters in a Prometheus registry, bad frames by reason", async () => {
    const registry = createRegistry();
    const key = randomBytes(32);
    const a = new TcpTransport({ id: "a", clusterKey: key, metrics: registry });
    const b = new TcpTransport({ id: "b", clusterKey: key, metrics: registry });
    await Promise.all([a.start(), b.start()]);
    try {
      a.addPeer("b", b.address());
      let got = 0;
      b.on("message", () => got++);
      for (let i = 0; i < 3; i++) a.send("b", i);
      await waitFor(() => got === 3, "3 messages");
      await new Promise<void>((resolve) => {
        const s = connect(b.address(), () => s.end(Buffer.from("GET / HTTP/1.1\r\n\r\n")));
        s.on("close", () => resolve());
        s.on("error", () => {});
      });
      await waitFor(() => (b.stats().badFrames["bad-magic"] ?? 0) === 1, "the bad frame to be counted");
      const text = await registry.metrics();
      expect(text).toMatch(/faultline_transport_messages_total\{node="a",direction="sent"\} 3/);
      expect(text).toMatch(/faultline_transport_messages_total\{node="b",direction="received"\} 3/);
      expect(text).toMatch(/faultline_transport_bad_frames_total\{node="b",reason="bad-magic"\} 1/);
      expect(text).toMatch(/faultline_transport_open_connections\{node="a"\} 1/);
    } finally {
      await Promise.all([a.stop(), b.stop()]);
    }
  });
});
