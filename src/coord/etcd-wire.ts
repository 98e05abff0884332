import { join } from "node:path";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { packageRoot } from "../runtime/package-root.ts";
import { CoordFailure } from "./member.ts";
import type {
  Bytes,
  Compare,
  DeleteRangeRequest,
  KeyValue,
  PutRequest,
  RangeRequest,
  RangeResponse,
  RequestOp,
  ResponseOp,
  TxnRequest,
  TxnResponse,
  WatchEvent,
} from "./types.ts";
import { Status } from "./types.ts";

// etcd's v3 messages on the wire: the .proto files, and the conversions between the objects
// proto-loader gives (field names as in the files, int64 as decimal strings, bytes as Buffers)
// and faultline's own types (keys and values as latin1 strings, numbers).

/**
 * Where faultline's etcd-compatible .proto files live: the package's proto/ folder, found from
 * this module whether it runs from src/coord or from a bundle under node_modules/.cache.
 */
export const PROTO_DIR = join(packageRoot() ?? fileURLToPath(new URL("../../", import.meta.url)), "proto");

/**
 * etcd's v3 services and messages from faultline's .proto files (field names as in the files,
 * int64 as decimal strings, enums as numbers): for the server, and for clients in tests and benches.
 */
export function etcdProto(): Pb {
  const def = protoLoader.loadSync(["etcdserverpb/rpc.proto"], {
    includeDirs: [PROTO_DIR],
    keepCase: true,
    longs: String,
    enums: Number,
    defaults: true,
    oneofs: true,
  });
  return (grpc.loadPackageDefinition(def) as Pb).etcdserverpb;
}

/** Who else is in the cluster, for MemberList and Status. */
export interface ClusterInfo {
  members: Array<{ id: string; clientUrl: string; peerUrl: string }>;
  version: string;
}

// biome-ignore lint/suspicious/noExplicitAny: messages decoded by proto-loader are untyped
export type Pb = any;

export const toBytes = (b: unknown): Bytes =>
  b === undefined || b === null
    ? ""
    : Buffer.isBuffer(b)
      ? b.toString("latin1")
      : b instanceof Uint8Array
        ? Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("latin1")
        : String(b);
export const fromBytes = (s: Bytes): Buffer => Buffer.from(s, "latin1");
export const num = (v: unknown): number => (v === undefined || v === null || v === "" ? 0 : Number(v));

/** A stable 64-bit id for a member name (FNV-1a), as etcd shows member ids. */
export function memberId(name: string): string {
  let h = 0xcbf29ce484222325n;
  for (const c of Buffer.from(name)) h = BigInt.asUintN(64, (h ^ BigInt(c)) * 0x100000001b3n);
  return h.toString();
}

/**
 * A uint64 as protobufjs's `fromObject` accepts it without parsing: `{ low, high, unsigned }`
 * (it takes any such object as a Long). Given a decimal string, it parses the digits into Longs
 * on every message — two ids in every reply header.
 */
export interface U64Bits {
  low: number;
  high: number;
  unsigned: true;
}
export function u64Bits(decimal: string): U64Bits {
  const v = BigInt.asUintN(64, BigInt(decimal));
  return { low: Number(v & 0xffffffffn) | 0, high: Number(v >> 32n) | 0, unsigned: true };
}

export function pbKv(kv: KeyValue): Pb {
  return {
    key: fromBytes(kv.key),
    create_revision: kv.create_revision,
    mod_revision: kv.mod_revision,
    version: kv.version,
    value: fromBytes(kv.value),
    lease: kv.lease,
  };
}

export function rangeReq(r: Pb): RangeRequest {
  return {
    key: toBytes(r.key),
    range_end: toBytes(r.range_end),
    limit: num(r.limit),
    revision: num(r.revision),
    sort_order: num(r.sort_order),
    sort_target: num(r.sort_target),
    serializable: !!r.serializable,
    keys_only: !!r.keys_only,
    count_only: !!r.count_only,
    min_mod_revision: num(r.min_mod_revision),
    max_mod_revision: num(r.max_mod_revision),
    min_create_revision: num(r.min_create_revision),
    max_create_revision: num(r.max_create_revision),
  };
}

export function putReq(p: Pb): PutRequest {
  return {
    key: toBytes(p.key),
    value: toBytes(p.value),
    lease: num(p.lease),
    prev_kv: !!p.prev_kv,
    ignore_value: !!p.ignore_value,
    ignore_lease: !!p.ignore_lease,
  };
}

export function delReq(d: Pb): DeleteRangeRequest {
  return { key: toBytes(d.key), range_end: toBytes(d.range_end), prev_kv: !!d.prev_kv };
}

export function compare(c: Pb): Compare {
  return {
    result: num(c.result),
    target: num(c.target),
    key: toBytes(c.key),
    range_end: toBytes(c.range_end),
    version: num(c.version),
    create_revision: num(c.create_revision),
    mod_revision: num(c.mod_revision),
    value: toBytes(c.value),
    lease: num(c.lease),
  };
}

export function requestOp(o: Pb): RequestOp {
  if (o.request_range) return { request_range: rangeReq(o.request_range) };
  if (o.request_put) return { request_put: putReq(o.request_put) };
  if (o.request_delete_range) return { request_delete_range: delReq(o.request_delete_range) };
  if (o.request_txn) return { request_txn: txnReq(o.request_txn) };
  throw new CoordFailure(Status.InvalidArgument, "etcdserver: a transaction operation names no request");
}

export function txnReq(t: Pb): TxnRequest {
  return {
    compare: (t.compare ?? []).map(compare),
    success: (t.success ?? []).map(requestOp),
    failure: (t.failure ?? []).map(requestOp),
  };
}

export function pbRange(r: RangeResponse): Pb {
  return { kvs: r.kvs.map(pbKv), more: r.more, count: r.count };
}

export function pbResponseOp(o: ResponseOp): Pb {
  if (o.response_range) return { response_range: pbRange(o.response_range) };
  if (o.response_put)
    return { response_put: o.response_put.prev_kv ? { prev_kv: pbKv(o.response_put.prev_kv) } : {} };
  if (o.response_delete_range) {
    return {
      response_delete_range: {
        deleted: o.response_delete_range.deleted,
        prev_kvs: o.response_delete_range.prev_kvs.map(pbKv),
      },
    };
  }
  return { response_txn: pbTxn(o.response_txn!) };
}

export function pbTxn(t: TxnResponse): Pb {
  return { succeeded: t.succeeded, responses: t.responses.map(pbResponseOp) };
}

export function pbEvent(e: WatchEvent): Pb {
  return {
    type: e.type === "put" ? 0 : 1,
    kv: pbKv(e.kv),
    ...(e.prev_kv ? { prev_kv: pbKv(e.prev_kv) } : {}),
  };
}
