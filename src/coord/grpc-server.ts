import * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";
import { ErrorCode, FaultlineError } from "../runtime/errors.ts";
import { silentLogger } from "../runtime/logger.ts";
import {
  type ClusterInfo,
  delReq,
  etcdProto,
  fromBytes,
  memberId,
  num,
  type Pb,
  pbEvent,
  pbKv,
  pbRange,
  pbTxn,
  putReq,
  rangeReq,
  toBytes,
  txnReq,
  type U64Bits,
  u64Bits,
} from "./etcd-wire.ts";
import { CoordFailure, type CoordMember, type Watcher } from "./member.ts";
import { ReplyPacer } from "./reply-pacer.ts";
import type { Command, KeyValue, RangeResponse, TxnResponse } from "./types.ts";
import { Status } from "./types.ts";

/**
 * A unary call's reply and its status go out together. grpc-js sends the status (the HTTP/2
 * trailers) only once the reply's write has completed — a turn of the event loop and a socket
 * write later, which the client waits for (strace of a leader: ~0.2 ms between the two writes).
 * Streams keep grpc-js's order, where the write callback is their flow control.
 */
class EndAtOnce extends grpc.ServerInterceptingCall {
  constructor(private readonly call: grpc.ServerInterceptingCallInterface) {
    super(call);
  }
  override sendMessage(message: unknown, callback: () => void): void {
    // A write that fails later breaks the stream: the client sees an error either way.
    this.call.sendMessage(message, () => {});
    try {
      callback(); // the OK status
    } catch {
      // grpc-js already ended the call with INTERNAL (a reply it could not serialize): its
      // status went out, and a second one cannot.
    }
  }
}

/** The server interceptor that applies `EndAtOnce` to unary calls (exported for the bench's gRPC floor). */
export const endUnaryAtOnce: grpc.ServerInterceptor = (method, call) =>
  method.requestStream || method.responseStream ? new grpc.ServerInterceptingCall(call) : new EndAtOnce(call);

export interface CoordGrpcServerOptions {
  /** Unary replies sent in one event-loop turn at most (default 16); see reply-pacer.ts. */
  repliesPerTurn?: number;
}

/**
 * etcd's v3 gRPC API (KV, Watch, Lease, Cluster.MemberList, Maintenance.Status) over a
 * coordination member, so that etcdctl and etcd client libraries work unchanged. What faultline
 * does not serve answers UNIMPLEMENTED with a message, never a hang.
 */
export class CoordGrpcServer {
  // Channelz (grpc-js's introspection service, which faultline does not serve) would track every
  // call: closures and timestamps a call, for nothing.
  private readonly server = new grpc.Server({ interceptors: [endUnaryAtOnce], "grpc.enable_channelz": 0 });
  private readonly log: Logger;
  /**
   * This member's and the cluster's ids (FNV-1a of the names, as etcd shows them), as protobufjs
   * takes a uint64 without parsing a decimal string every reply.
   */
  private readonly wireIds: { cluster: U64Bits; self: U64Bits };
  private readonly pacer: ReplyPacer;

  constructor(
    private readonly member: CoordMember,
    private readonly cluster: ClusterInfo,
    logger?: Logger,
    options: CoordGrpcServerOptions = {},
  ) {
    this.log = logger ?? silentLogger();
    this.pacer = new ReplyPacer(options.repliesPerTurn ?? 16);
    const clusterId = memberId(
      cluster.members
        .map((m) => m.id)
        .sort()
        .join(","),
    );
    this.wireIds = { cluster: u64Bits(clusterId), self: u64Bits(memberId(member.id)) };
    const svc = etcdProto();
    this.server.addService(svc.KV.service, this.kv());
    this.server.addService(svc.Watch.service, { Watch: (call: Pb) => this.watch(call) });
    this.server.addService(svc.Lease.service, this.lease());
    this.server.addService(svc.Cluster.service, this.clusterService());
    this.server.addService(svc.Maintenance.service, this.maintenance());
  }

  /** Listen on `host:port` (port 0: any); resolves with the port. */
  listen(address: string): Promise<number> {
    return new Promise((resolve, reject) =>
      this.server.bindAsync(address, grpc.ServerCredentials.createInsecure(), (e, port) =>
        e
          ? reject(
              new FaultlineError(
                ErrorCode.BadConfig,
                `cannot serve gRPC clients on ${address} (${e.message}): choose another client port or stop what uses it`,
                { cause: e },
              ),
            )
          : resolve(port),
      ),
    );
  }

  stop(): Promise<void> {
    return new Promise((resolve) => {
      this.server.tryShutdown(() => resolve());
      // Streams (watches, keep-alives) would hold a graceful shutdown open: end them.
      setTimeout(() => this.server.forceShutdown(), 200).unref(); // real-io: server shutdown grace
    });
  }

  private header(revision: number): Pb {
    return {
      cluster_id: this.wireIds.cluster,
      member_id: this.wireIds.self,
      revision: revision || this.member.mvcc.revision,
      raft_term: this.member.raft.core.term,
    };
  }

  /** Run `fn` and answer the unary call with its result, or with its error as a gRPC status. */
  private unary(fn: (req: Pb, call: Pb) => Promise<Pb>) {
    return (call: Pb, cb: grpc.sendUnaryData<Pb>) => {
      fn(call.request, call).then(
        (res) => this.pacer.run(() => cb(null, res)),
        (e: unknown) => this.pacer.run(() => cb(this.status(e))),
      );
    };
  }

  private status(e: unknown): Partial<grpc.ServiceError> {
    if (e instanceof CoordFailure) return { code: e.grpc, details: e.message };
    this.log.warn({ err: e }, "coord request failed");
    return { code: grpc.status.UNAVAILABLE, details: `etcdserver: ${(e as Error)?.message ?? String(e)}` };
  }

  private unimplemented(service: string, method: string, why: string) {
    return (_call: Pb, cb: grpc.sendUnaryData<Pb>) =>
      cb({
        code: grpc.status.UNIMPLEMENTED,
        details: `faultline does not serve ${service}.${method}: ${why}`,
      });
  }

  private kv() {
    return {
      Range: this.unary(async (r) => {
        const res = await this.member.range(rangeReq(r));
        return { header: this.header(res.revision), ...pbRange(res.value as RangeResponse) };
      }),
      Put: this.unary(async (p) => {
        const res = await this.member.write({ c: "put", req: putReq(p) });
        const v = res.value as { prev_kv?: KeyValue };
        return { header: this.header(res.revision), ...(v.prev_kv ? { prev_kv: pbKv(v.prev_kv) } : {}) };
      }),
      DeleteRange: this.unary(async (d) => {
        const res = await this.member.write({ c: "del", req: delReq(d) });
        const v = res.value as { deleted: number; prev_kvs: KeyValue[] };
        return { header: this.header(res.revision), deleted: v.deleted, prev_kvs: v.prev_kvs.map(pbKv) };
      }),
      Txn: this.unary(async (t) => {
        const res = await this.member.write({ c: "txn", req: txnReq(t) });
        return { header: this.header(res.revision), ...pbTxn(res.value as TxnResponse) };
      }),
      Compact: this.unary(async (c) => {
        const res = await this.member.write({ c: "compact", revision: num(c.revision) } satisfies Command);
        return { header: this.header(res.revision) };
      }),
    };
  }

  private watch(call: Pb): void {
    const cancels = new Map<string, () => void>();
    let nextId = 0;
    const write = (m: Pb) => {
      if (!call.cancelled && call.writable !== false) call.write(m);
    };
    call.on("data", (req: Pb) => {
      if (req.create_request) {
        const c = req.create_request;
        let id = num(c.watch_id);
        if (!id) {
          while (cancels.has(String(nextId))) nextId++;
          id = nextId++;
        }
        const noPut = (c.filters ?? []).includes(0);
        const noDelete = (c.filters ?? []).includes(1);
        const w: Watcher = {
          key: toBytes(c.key),
          end: toBytes(c.range_end) || undefined,
          prevKv: !!c.prev_kv,
          next: 0,
          send: (rev, events) => {
            const kept = events.filter(
              (e) => !(noPut && e.type === "put") && !(noDelete && e.type === "delete"),
            );
            if (kept.length) write({ header: this.header(rev), watch_id: id, events: kept.map(pbEvent) });
          },
          compacted: (rev) =>
            write({
              header: this.header(0),
              watch_id: id,
              canceled: true,
              compact_revision: rev,
              cancel_reason: "etcdserver: mvcc: required revision has been compacted",
            }),
        };
        write({ header: this.header(0), watch_id: id, created: true });
        cancels.set(String(id), this.member.watch(w, num(c.start_revision)));
      } else if (req.cancel_request) {
        const id = String(num(req.cancel_request.watch_id));
        cancels.get(id)?.();
        cancels.delete(id);
        write({ header: this.header(0), watch_id: id, canceled: true });
      } else if (req.progress_request) {
        write({ header: this.header(0), watch_id: -1 });
      }
    });
    const end = () => {
      for (const c of cancels.values()) c();
      cancels.clear();
    };
    call.on("end", () => {
      end();
      call.end();
    });
    call.on("error", end);
    call.on("cancelled", end);
  }

  private lease() {
    return {
      LeaseGrant: this.unary(async (r, call) => {
        const owner = call.metadata?.get("faultline-owner")?.[0];
        const res = await this.member.leaseGrant(num(r.ID), num(r.TTL), owner ? String(owner) : undefined);
        return { header: this.header(res.revision), ID: res.id, TTL: res.ttl };
      }),
      LeaseRevoke: this.unary(async (r) => {
        const res = await this.member.leaseRevoke(num(r.ID));
        return { header: this.header(res.revision) };
      }),
      LeaseKeepAlive: (call: Pb) => {
        call.on("data", (r: Pb) => {
          const id = num(r.ID);
          this.member.leaseKeepAlive(id).then(
            (ttl) => call.write({ header: this.header(0), ID: id, TTL: ttl }),
            (e: unknown) => {
              // etcd answers a keep-alive for an unknown lease with TTL 0, not an error.
              if (e instanceof CoordFailure && e.grpc === Status.NotFound)
                call.write({ header: this.header(0), ID: id, TTL: 0 });
              else call.destroy(Object.assign(new Error((e as Error).message), this.status(e)));
            },
          );
        });
        call.on("end", () => call.end());
      },
      LeaseTimeToLive: this.unary(async (r) => {
        const t = await this.member.leaseTimeToLive(num(r.ID));
        return {
          header: this.header(0),
          ID: num(r.ID),
          TTL: t.ttl,
          grantedTTL: t.granted,
          keys: r.keys ? t.keys.map(fromBytes) : [],
        };
      }),
      LeaseLeases: this.unary(async () => ({
        header: this.header(0),
        leases: this.member.leaseIds().map((ID) => ({ ID })),
      })),
    };
  }

  private clusterService() {
    const why = "the members are fixed at start (faultline coord --peers)";
    return {
      MemberList: this.unary(async () => ({
        header: this.header(0),
        members: this.cluster.members.map((m) => ({
          ID: memberId(m.id),
          name: m.id,
          peerURLs: [m.peerUrl],
          clientURLs: [m.clientUrl],
          isLearner: false,
        })),
      })),
      MemberAdd: this.unimplemented("Cluster", "MemberAdd", why),
      MemberRemove: this.unimplemented("Cluster", "MemberRemove", why),
      MemberUpdate: this.unimplemented("Cluster", "MemberUpdate", why),
      MemberPromote: this.unimplemented("Cluster", "MemberPromote", why),
    };
  }

  private maintenance() {
    const why = "not part of faultline's coordination service";
    return {
      Status: this.unary(async () => {
        const core = this.member.raft.core;
        return {
          header: this.header(0),
          version: this.cluster.version,
          dbSize: 0,
          leader: core.leader ? memberId(core.leader) : "0",
          raftIndex: core.log.lastIndex(),
          raftTerm: core.term,
          raftAppliedIndex: core.applied,
          errors: [],
          dbSizeInUse: 0,
          isLearner: false,
        };
      }),
      Alarm: this.unary(async () => ({ header: this.header(0), alarms: [] })),
      Defragment: this.unimplemented("Maintenance", "Defragment", why),
      Hash: this.unimplemented("Maintenance", "Hash", why),
      HashKV: this.unimplemented("Maintenance", "HashKV", why),
      MoveLeader: this.unimplemented("Maintenance", "MoveLeader", why),
    };
  }
}
