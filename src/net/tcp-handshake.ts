import { createHmac, randomBytes } from "node:crypto";
import { decode, encode } from "../runtime/codec.ts";
import { FrameError } from "../runtime/errors.ts";
import { type Address, isAddress, type NodeId } from "./transport.ts";

/**
 * Wire protocol of the HELLO exchange and of the connection it opens; bumped on any incompatible
 * change, so that mismatched nodes fail the handshake with a message that says so. 2: Data frames
 * carry ChaCha20-Poly1305 tags. 3: Data frames carry Poly1305 tags under one-time keys from a
 * ChaCha20 keystream (runtime/mac.ts). 4: frame headers carry a check byte and a 24-bit length
 * (frame version 2), and a Close frame ends a connection whose peer sent a damaged frame. Bump it
 * too when a protocol above the transport changes what it sends incompatibly (the Raft messages,
 * say): nodes of mixed versions then fail their handshakes with a message instead of dropping each
 * other's messages as malformed.
 */
export const HANDSHAKE_VERSION = 4;
export const NONCE_BYTES = 16;
/** Largest frame accepted before the handshake completes: a stranger cannot make us buffer more. */
export const HANDSHAKE_MAX_FRAME = 4096;

export interface Hello {
  v: number;
  /** The sender's node id. */
  from: NodeId;
  /** Whom the sender believes it is talking to. */
  to: NodeId;
  /** Where the sender listens (so an acceptor learns how to dial back). */
  addr?: Address;
  /** The sender's boot id: random per process start, so a restart is visible. */
  boot: string;
  nonce: Uint8Array;
  /** In the acceptor's reply: the dialer's nonce, binding the reply to this connection. */
  echo?: Uint8Array;
}

export function newNonce(): Buffer {
  return randomBytes(NONCE_BYTES);
}

export function newBootId(): string {
  return randomBytes(8).toString("hex");
}

export function encodeHello(h: Hello): Buffer {
  return encode(h);
}

function bad(msg: string): FrameError {
  return new FrameError("bad-payload", `bad handshake: ${msg}`);
}

/** Decode and validate a HELLO payload (already authenticated with the cluster key). */
export function decodeHello(payload: Uint8Array, expectEcho: boolean): Hello {
  const h = decode(payload) as Partial<Hello> | null;
  if (typeof h !== "object" || h === null) throw bad("not a map");
  if (h.v !== HANDSHAKE_VERSION) throw bad(`handshake version ${String(h.v)} is not ${HANDSHAKE_VERSION}`);
  if (typeof h.from !== "string" || h.from.length === 0 || h.from.length > 256)
    throw bad("missing sender id");
  if (typeof h.to !== "string" || h.to.length === 0 || h.to.length > 256) throw bad("missing receiver id");
  if (typeof h.boot !== "string" || h.boot.length > 64) throw bad("missing boot id");
  if (!(h.nonce instanceof Uint8Array) || h.nonce.length !== NONCE_BYTES) throw bad("missing nonce");
  if (expectEcho && (!(h.echo instanceof Uint8Array) || h.echo.length !== NONCE_BYTES))
    throw bad("missing echo");
  if (h.addr !== undefined && !isAddress(h.addr)) throw bad("malformed listen address");
  return h as Hello;
}

/**
 * Per-connection, per-direction keys: HMAC(clusterKey, label || dialerNonce || acceptorNonce). A frame
 * recorded on one connection (or reflected back in the other direction) fails its MAC on any other.
 */
export function deriveKeys(
  clusterKey: Uint8Array,
  dialerNonce: Uint8Array,
  acceptorNonce: Uint8Array,
): { dialerToAcceptor: Buffer; acceptorToDialer: Buffer } {
  const k = (label: string) =>
    createHmac("sha256", clusterKey).update(label).update(dialerNonce).update(acceptorNonce).digest();
  return { dialerToAcceptor: k("faultline/v1/d2a"), acceptorToDialer: k("faultline/v1/a2d") };
}
