import type { Socket } from "node:net";
import type { Clock, Timer } from "../runtime/clock.ts";
import { FrameError } from "../runtime/errors.ts";
import {
  batchFrameBytes,
  FRAME_HEADER_BYTES,
  FRAME_MAC_BYTES,
  FrameReader,
  FrameType,
  openFrame,
  sealBatch,
  sealFrame,
  splitBatch,
  verifyFrame,
} from "../runtime/frame.ts";
import { MacKey } from "../runtime/mac.ts";
import {
  decodeHello,
  deriveKeys,
  encodeHello,
  HANDSHAKE_MAX_FRAME,
  HANDSHAKE_VERSION,
  type Hello,
  newNonce,
} from "./tcp-handshake.ts";
import type { Address, ConnectionEventKind, NodeId } from "./transport.ts";

/** What a connection needs from the transport that owns it. */
export interface ConnectionHost {
  readonly id: NodeId;
  readonly boot: string;
  readonly clusterKey: Uint8Array;
  /** MAC key for HELLO frames (the cluster key itself). */
  readonly helloKey: MacKey;
  readonly clock: Clock;
  readonly maxFrameBytes: number;
  readonly handshakeTimeoutMs: number;
  listenAddress(): Address | undefined;
  /** Acceptor side: may this authenticated HELLO become the connection to its sender? */
  admit(conn: TcpConnection, hello: { from: NodeId; boot: string }): boolean;
  opened(conn: TcpConnection): void;
  messages(conn: TcpConnection, messages: Buffer[]): void;
  /** A frame failed its check (closeReason: the reason a peer's Close frame gave, for "peer-closed"). */
  badFrame(conn: TcpConnection, err: FrameError, closeReason?: string): void;
  handshakeFailed(conn: TcpConnection, why: string): void;
  drained(conn: TcpConnection): void;
  /** Called exactly once, when the socket is gone. */
  ended(conn: TcpConnection, kind: ConnectionEventKind, code?: string): void;
}

/**
 * connecting → handshake → open (dialer), or handshake → confirming → open (acceptor): the
 * acceptor treats the connection as established only once the dialer's first frame under the new
 * session key arrives, so a recorded HELLO replayed by someone without the cluster key can never
 * displace a live connection.
 */
type State = "connecting" | "handshake" | "confirming" | "open" | "closed";

/** TCP keepalive idle time on every connection (detectors see failures far sooner; this reclaims sockets). */
const KEEPALIVE_MS = 15_000;
/**
 * A connection's reusable frame memory: at least this large, and only used for frames up to the
 * max (so a connection keeps at most one such buffer, 16–256 KiB).
 */
const SPARE_MIN_BYTES = 16 * 1024;
const SPARE_MAX_BYTES = 256 * 1024;

const UNREACHABLE = new Set(["EHOSTUNREACH", "ENETUNREACH", "EHOSTDOWN", "ENETDOWN"]);

function classify(code: string | undefined): ConnectionEventKind {
  if (code === undefined) return "closed";
  if (code === "ECONNREFUSED") return "refused";
  if (code === "ECONNRESET" || code === "EPIPE") return "reset";
  if (code === "ETIMEDOUT" || code === "FL_TIMEOUT") return "timeout";
  if (UNREACHABLE.has(code)) return "unreachable";
  return "closed";
}

/**
 * One TCP connection: the HELLO exchange, then authenticated Data frames with per-direction keys
 * and implicit sequence numbers. Any frame error closes the connection (a byte stream that failed
 * once cannot be trusted to be in sync) and is reported to the host, never thrown.
 */
export class TcpConnection {
  state: State;
  peer: NodeId | undefined;
  peerBoot: string | undefined;
  peerAddress: Address | undefined;
  /** Set by the transport when it replaces or rejects this connection: its end is not news. */
  superseded = false;
  /** The socket's write buffer is full; wait for drain. */
  blocked = false;
  /**
   * Memory frames are sealed into while the socket holds nothing (see sendBatch). A fresh buffer a
   * frame cost more than the copy: at 4 KiB, ~1 µs to allocate, and the garbage (or slabs of views
   * kept alive by the socket) drove a mark-compact every ~50 ms in a round-trip loop.
   */
  private spare: Buffer | undefined;
  /** A Close frame is on its way out: nothing more is read or sent. */
  private closing = false;
  /** The reason in the peer's Close frame, once one arrived. */
  private peerCloseReason: string | undefined;
  /** The TCP connection was established (the peer's host answered), whatever became of the handshake. */
  tcpConnected = false;
  /** A dial made to replace a stalled connection (TcpTransport.refresh): only its refusal is news. */
  refresh = false;
  readonly remote: string;

  private readonly reader = new FrameReader(HANDSHAKE_MAX_FRAME);
  private readonly nonce = newNonce();
  private sendKey: MacKey | undefined;
  private recvKey: MacKey | undefined;
  private sendSeq = 0;
  private recvSeq = 0;
  private errorCode: string | undefined;
  private timer: Timer | undefined;

  constructor(
    private readonly host: ConnectionHost,
    readonly socket: Socket,
    readonly dir: "out" | "in",
    expectedPeer?: NodeId,
  ) {
    this.peer = expectedPeer;
    this.state = dir === "out" ? "connecting" : "handshake";
    this.remote = `${socket.remoteAddress ?? "?"}:${socket.remotePort ?? "?"}`;
    socket.setNoDelay(true);
    // A half-open connection (peer host gone without a FIN) is eventually noticed even when idle.
    socket.setKeepAlive(true, KEEPALIVE_MS);
    socket.on("data", (chunk: Buffer) => this.onData(chunk));
    socket.on("error", (err: NodeJS.ErrnoException) => {
      this.errorCode ??= err.code ?? "EUNKNOWN";
    });
    socket.on("close", () => this.onClose());
    socket.on("drain", () => {
      if (this.closing) return;
      this.blocked = false;
      if (this.state === "open") host.drained(this);
    });
    this.timer = host.clock.setTimer(host.handshakeTimeoutMs, () => {
      this.timer = undefined;
      if (this.state !== "open" && this.state !== "closed") {
        this.errorCode ??= "FL_TIMEOUT";
        if (this.state === "handshake") host.handshakeFailed(this, "handshake timed out");
        this.destroy();
      }
    });
    if (dir === "out") socket.on("connect", () => this.onConnect());
  }

  /** Send a batch of encoded messages. Returns false when the socket buffer is full (backpressure). */
  sendBatch(messages: readonly Buffer[]): boolean {
    if ((this.state !== "open" && this.state !== "confirming") || !this.sendKey || this.closing) return false;
    const n = batchFrameBytes(messages);
    // The reusable memory only while the socket holds nothing: then every frame written before,
    // including one that went out asynchronously, has reached the kernel, and the socket keeps no
    // reference to it. With bytes waiting this frame waits too: memory of its own (pooled < 4 KiB).
    let into: Buffer | undefined;
    if (this.socket.writableLength === 0 && n <= SPARE_MAX_BYTES) {
      into =
        this.spare && this.spare.length >= n
          ? this.spare
          : Buffer.allocUnsafeSlow(Math.max(n, SPARE_MIN_BYTES));
      this.spare = into;
    }
    const frame = sealBatch(messages, this.sendKey, this.sendSeq++, into);
    const ok = this.socket.write(frame);
    if (!ok) this.blocked = true;
    return ok;
  }

  destroy(): void {
    if (this.state === "closed") return;
    this.socket.destroy();
  }

  private onConnect(): void {
    if (this.state !== "connecting") return;
    this.tcpConnected = true;
    this.state = "handshake";
    this.writeHello({ to: this.peer! });
  }

  private writeHello(fields: { to: NodeId; echo?: Uint8Array }): void {
    const hello: Hello = {
      v: HANDSHAKE_VERSION,
      from: this.host.id,
      to: fields.to,
      boot: this.host.boot,
      nonce: this.nonce,
      ...(fields.echo ? { echo: fields.echo } : {}),
    };
    const addr = this.host.listenAddress();
    if (addr) hello.addr = addr;
    this.socket.write(sealFrame(FrameType.Hello, encodeHello(hello), this.host.helloKey));
  }

  private onData(chunk: Buffer): void {
    if (this.state === "closed" || this.closing) return;
    this.reader.push(chunk);
    try {
      for (;;) {
        if (this.socket.destroyed) return;
        const frame = this.reader.next();
        if (!frame) return;
        if (this.state === "open") this.onDataFrame(frame);
        else if (this.state === "handshake") this.onHelloFrame(frame);
        else if (this.state === "confirming") {
          const payload = this.authenticate(frame); // throws unless the dialer holds the session key
          this.state = "open";
          this.established();
          if (this.state === "open" && payload.length > 0) this.host.messages(this, splitBatch(payload));
        } else throw new FrameError("bad-type", "data arrived before the connection was established");
      }
    } catch (e) {
      const err = e instanceof FrameError ? e : new FrameError("bad-payload", String(e), { cause: e });
      this.host.badFrame(this, err, this.peerCloseReason);
      this.errorCode ??= "FL_BAD_FRAME";
      if (err.reason !== "bad-payload" && err.reason !== "peer-closed") this.closeWith(err.reason);
      else this.destroy();
    }
  }

  /**
   * A frame failed its check: close, and (when a session key is held) tell the peer why in a last
   * frame, as TLS sends a bad_record_mac alert. Only the receiving side sees damage; this way the
   * sender learns that its frames arrive damaged too.
   */
  private closeWith(reason: string): void {
    if (this.state === "closed" || this.closing) return;
    if (!this.sendKey || (this.state !== "open" && this.state !== "confirming")) {
      this.destroy();
      return;
    }
    this.closing = true;
    // Messages still queued stay queued (the transport sends nothing on a blocked connection) and
    // go on the next connection.
    this.blocked = true;
    const frame = sealFrame(FrameType.Close, Buffer.from(reason, "utf8"), this.sendKey, this.sendSeq++);
    // end(), not destroy() once written: a socket destroyed with bytes unread sends a reset,
    // which discards what is still queued to send, the Close with it. What arrives meanwhile is
    // read and dropped; the peer closes on the Close, and a peer that never does (or never reads)
    // does not keep the socket past the timer.
    this.socket.end(frame);
    this.timer?.cancel();
    this.timer = this.host.clock.setTimer(this.host.handshakeTimeoutMs, () => this.socket.destroy());
  }

  private onHelloFrame(frame: Buffer): void {
    const { type, payload } = openFrame(frame, this.host.helloKey, HANDSHAKE_MAX_FRAME);
    if (type !== FrameType.Hello) throw new FrameError("bad-type", `expected HELLO, got frame type ${type}`);
    const hello = decodeHello(payload, this.dir === "out");
    if (hello.to !== this.host.id) {
      this.fail(
        `peer "${hello.from}" believes it is talking to "${hello.to}", but this node is "${this.host.id}"`,
      );
      return;
    }
    if (hello.from === this.host.id) {
      this.fail(`peer claims this node's own id "${hello.from}": two nodes share an id?`);
      return;
    }
    if (this.dir === "out") {
      if (hello.from !== this.peer) {
        this.fail(`dialed "${this.peer}" but "${hello.from}" answered: check the peer's address`);
        return;
      }
      if (!Buffer.from(hello.echo!).equals(this.nonce))
        throw new FrameError("bad-mac", "HELLO reply is not for this connection (replayed?)");
      const keys = deriveKeys(this.host.clusterKey, this.nonce, hello.nonce);
      this.sendKey = new MacKey(keys.dialerToAcceptor, { uniqueSeq: true });
      this.recvKey = new MacKey(keys.acceptorToDialer, { uniqueSeq: true });
      this.peerBoot = hello.boot;
      this.peerAddress = hello.addr;
      this.state = "open";
      // Key confirmation: an (empty) first frame under the session key.
      this.sendBatch([]);
      this.established();
      return;
    }
    this.peer = hello.from;
    this.peerBoot = hello.boot;
    this.peerAddress = hello.addr;
    if (!this.host.admit(this, hello)) {
      this.superseded = true;
      this.destroy();
      return;
    }
    this.writeHello({ to: hello.from, echo: hello.nonce });
    const keys = deriveKeys(this.host.clusterKey, hello.nonce, this.nonce);
    this.sendKey = new MacKey(keys.acceptorToDialer, { uniqueSeq: true });
    this.recvKey = new MacKey(keys.dialerToAcceptor, { uniqueSeq: true });
    this.state = "confirming";
  }

  private established(): void {
    this.timer?.cancel();
    this.timer = undefined;
    this.reader.setMaxPayload(this.host.maxFrameBytes);
    this.host.opened(this);
  }

  private onDataFrame(frame: Buffer): void {
    this.host.messages(this, splitBatch(this.authenticate(frame)));
  }

  /**
   * Check a Data frame under the session key and the next sequence number; its payload. A Close
   * frame that passes the check ends the connection (FrameError "peer-closed", its reason in the
   * message).
   */
  private authenticate(frame: Buffer): Buffer {
    const type = frame[3];
    if (type !== FrameType.Data && type !== FrameType.Close)
      throw new FrameError("bad-type", `unexpected frame type ${type} on an open connection`);
    if (!verifyFrame(frame, this.recvKey!, this.recvSeq)) {
      throw new FrameError("bad-mac", "frame failed its integrity check (corrupted, forged or replayed)");
    }
    this.recvSeq++;
    const payload = frame.subarray(FRAME_HEADER_BYTES, frame.length - FRAME_MAC_BYTES);
    if (type === FrameType.Close) {
      const why = payload.toString("utf8", 0, Math.min(payload.length, 64)).replace(/[^\w-]/g, "?");
      this.peerCloseReason = why;
      throw new FrameError(
        "peer-closed",
        `the peer closed the connection: a frame of ours failed its check (${why})`,
      );
    }
    return payload;
  }

  private fail(why: string): void {
    this.errorCode ??= "FL_HANDSHAKE";
    this.host.handshakeFailed(this, why);
    this.destroy();
  }

  private onClose(): void {
    if (this.state === "closed") return;
    this.state = "closed";
    this.timer?.cancel();
    this.timer = undefined;
    this.host.ended(this, classify(this.errorCode), this.errorCode);
  }
}
