/**
 * Typed errors. Callers branch on `code`, never on message text.
 */
export const ErrorCode = {
  BadFrame: "FL_BAD_FRAME",
  BadConfig: "FL_BAD_CONFIG",
  UnknownPeer: "FL_UNKNOWN_PEER",
  QueueFull: "FL_QUEUE_FULL",
  Stopped: "FL_STOPPED",
  Timeout: "FL_TIMEOUT",
  Aborted: "FL_ABORTED",
  Handshake: "FL_HANDSHAKE",
  Invariant: "FL_INVARIANT",
  BadArgument: "FL_BAD_ARGUMENT",
  /** A durable store that cannot be opened as it is (damaged, truncated, not ours). */
  BadStore: "FL_BAD_STORE",
  /** A durable channel gave up on its peer (retired, or its host certainly crashed). */
  ChannelGaveUp: "FL_CHANNEL_GAVE_UP",
  /** A FUSE group could not be created (a member did not answer in time). */
  FuseCreate: "FL_FUSE_CREATE",
  /** A request that only the Raft leader can serve reached another member (see the leader hint). */
  NotLeader: "FL_NOT_LEADER",
  /** A proposal Raft refused (a membership change while another is pending, a bad voter set). */
  Proposal: "FL_PROPOSAL",
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

export class FaultlineError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = "FaultlineError";
  }
}

/** A frame that failed to parse or authenticate. `reason` is stable and used as a metric label. */
export type FrameErrorReason =
  | "bad-magic"
  | "bad-version"
  | "bad-check"
  | "bad-type"
  | "oversized"
  | "truncated"
  | "bad-mac"
  | "bad-payload"
  /** The peer closed the connection because a frame of ours failed its check there (a Close frame). */
  | "peer-closed";

export class FrameError extends FaultlineError {
  readonly reason: FrameErrorReason;
  constructor(reason: FrameErrorReason, message: string, options?: { cause?: unknown }) {
    super(ErrorCode.BadFrame, message, options);
    this.reason = reason;
    this.name = "FrameError";
  }
}

export function isFaultlineError(e: unknown, code?: ErrorCode): e is FaultlineError {
  return e instanceof FaultlineError && (code === undefined || e.code === code);
}
