import { encodesOver } from "../consensus/messages.ts";
import { type Command, type CoordError, Errors, type TxnRequest } from "./types.ts";

/** etcd's --max-request-bytes default. */
const MAX_REQUEST_BYTES = 1.5 * 1024 * 1024;
const MAX_TXN_OPS = 128;
/** The largest encoded command: under Raft's 3.5 MiB proposal limit and a 4 MiB frame. */
const MAX_COMMAND_BYTES = 3 * 1024 * 1024;

/**
 * About the bytes a request carries: its keys and values (latin1 strings: a byte a character),
 * and a few for every field and every element, so that many empty operations count too.
 */
function requestBytes(v: unknown): number {
  if (typeof v === "string") return 2 + v.length;
  if (typeof v !== "object" || v === null) return 8;
  let n = 2;
  for (const x of Array.isArray(v) ? v : Object.values(v)) n += 2 + requestBytes(x);
  return n;
}

/** etcd's --max-txn-ops (128): no compare or branch list longer, at any level of nesting. */
function tooManyOps(t: TxnRequest): boolean {
  if (t.compare.length > MAX_TXN_OPS || t.success.length > MAX_TXN_OPS || t.failure.length > MAX_TXN_OPS)
    return true;
  return [...t.success, ...t.failure].some(
    (op) => op.request_txn !== undefined && tooManyOps(op.request_txn),
  );
}

/**
 * Why a write is refused before it goes to the log, in etcd's words, or undefined: too many
 * operations in a transaction; more key and value bytes than etcd's limit; or more than one log
 * entry and one forwarded message can carry (a command's encoding can be larger than its request:
 * empty operations, high bytes).
 */
export function refusal(cmd: Command, maxRequestBytes = MAX_REQUEST_BYTES): CoordError | undefined {
  if (cmd.c === "txn" && tooManyOps(cmd.req)) return Errors.tooManyOps;
  if (requestBytes(cmd) > maxRequestBytes || encodesOver(cmd, MAX_COMMAND_BYTES)) return Errors.tooLarge;
  return undefined;
}
