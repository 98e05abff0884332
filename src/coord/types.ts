/**
 * The coordination service's requests and results, shaped like etcd's v3 API messages (field
 * names as in its .proto files) so that the gRPC layer maps them one to one. Keys and values are
 * byte strings held as latin1 strings (one char per byte): they compare in byte order, and they
 * travel through msgpack and LMDB as plain strings.
 */
export type Bytes = string;

export interface KeyValue {
  key: Bytes;
  create_revision: number;
  mod_revision: number;
  version: number;
  value: Bytes;
  lease: number;
}

export interface WatchEvent {
  type: "put" | "delete";
  kv: KeyValue;
  prev_kv?: KeyValue;
}

export interface RangeRequest {
  key: Bytes;
  range_end?: Bytes;
  limit?: number;
  revision?: number;
  /** 0 none, 1 ascend, 2 descend. */
  sort_order?: number;
  /** 0 key, 1 version, 2 create, 3 mod, 4 value. */
  sort_target?: number;
  serializable?: boolean;
  keys_only?: boolean;
  count_only?: boolean;
  min_mod_revision?: number;
  max_mod_revision?: number;
  min_create_revision?: number;
  max_create_revision?: number;
}

export interface RangeResponse {
  kvs: KeyValue[];
  more: boolean;
  count: number;
}

export interface PutRequest {
  key: Bytes;
  value: Bytes;
  lease?: number;
  prev_kv?: boolean;
  ignore_value?: boolean;
  ignore_lease?: boolean;
}

export interface DeleteRangeRequest {
  key: Bytes;
  range_end?: Bytes;
  prev_kv?: boolean;
}

export interface Compare {
  /** 0 equal, 1 greater, 2 less, 3 not equal. */
  result: number;
  /** 0 version, 1 create, 2 mod, 3 value, 4 lease. */
  target: number;
  key: Bytes;
  range_end?: Bytes;
  version?: number;
  create_revision?: number;
  mod_revision?: number;
  value?: Bytes;
  lease?: number;
}

export interface RequestOp {
  request_range?: RangeRequest;
  request_put?: PutRequest;
  request_delete_range?: DeleteRangeRequest;
  request_txn?: TxnRequest;
}

export interface TxnRequest {
  compare: Compare[];
  success: RequestOp[];
  failure: RequestOp[];
}

export interface ResponseOp {
  response_range?: RangeResponse;
  response_put?: { prev_kv?: KeyValue };
  response_delete_range?: { deleted: number; prev_kvs: KeyValue[] };
  response_txn?: TxnResponse;
}

export interface TxnResponse {
  succeeded: boolean;
  responses: ResponseOp[];
}

/** What goes through the Raft log. */
export type Command =
  | { c: "put"; req: PutRequest }
  | { c: "del"; req: DeleteRangeRequest }
  | { c: "txn"; req: TxnRequest }
  | { c: "compact"; revision: number }
  | { c: "lease-grant"; id: number; ttl: number; owner?: string }
  | { c: "lease-revoke"; id: number };

/** A request the state machine refused: every member refuses it the same way. */
export interface CoordError {
  /** gRPC status code. */
  grpc: number;
  /** etcd's message for it, word for word, so that clients print what they would for etcd. */
  message: string;
}

export type Applied<T> = { ok: true; revision: number; value: T } | { ok: false; error: CoordError };

/** gRPC status codes used here. */
export const Status = {
  OK: 0,
  Cancelled: 1,
  InvalidArgument: 3,
  DeadlineExceeded: 4,
  NotFound: 5,
  AlreadyExists: 6,
  FailedPrecondition: 9,
  OutOfRange: 11,
  Unimplemented: 12,
  Unavailable: 14,
} as const;

export const Errors = {
  compacted: { grpc: Status.OutOfRange, message: "etcdserver: mvcc: required revision has been compacted" },
  future: { grpc: Status.OutOfRange, message: "etcdserver: mvcc: required revision is a future revision" },
  keyNotFound: { grpc: Status.InvalidArgument, message: "etcdserver: key not found" },
  tooLarge: { grpc: Status.InvalidArgument, message: "etcdserver: request is too large" },
  tooManyOps: { grpc: Status.InvalidArgument, message: "etcdserver: too many operations in txn request" },
  leaseNotFound: { grpc: Status.NotFound, message: "etcdserver: requested lease not found" },
  leaseExists: { grpc: Status.FailedPrecondition, message: "etcdserver: lease already exists" },
  duplicateKey: { grpc: Status.InvalidArgument, message: "etcdserver: duplicate key given in txn request" },
  emptyKey: { grpc: Status.InvalidArgument, message: "etcdserver: key is not provided" },
  badTTL: { grpc: Status.OutOfRange, message: "etcdserver: too large lease TTL" },
} satisfies Record<string, CoordError>;
