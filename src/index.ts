// The public surface of faultline. Internals stay internal.

export { AgentClient, type AgentClientOptions } from "./agent/agent-client.ts";
export { agentId, FENCED_EXIT_CODE, HostAgent, type HostAgentOptions } from "./agent/host-agent.ts";
export { FENCING_DEFAULTS, type FencingConfig, fenceBound, fencingConfig } from "./agent/lease.ts";
export { CoordGrpcServer, type CoordGrpcServerOptions } from "./coord/grpc-server.ts";
export { CoordFailure, CoordMember, type CoordMemberOptions, type Watcher } from "./coord/member.ts";
export { CoordNode, type CoordNodeOptions, type CoordPeer } from "./coord/node.ts";
export type {
  Bytes,
  Command,
  DeleteRangeRequest,
  KeyValue,
  PutRequest,
  RangeRequest,
  RangeResponse,
  TxnRequest,
  TxnResponse,
  WatchEvent,
} from "./coord/types.ts";
export { DetectionNode, type DetectionNodeOptions } from "./detect/detection-node.ts";
export type { Detector } from "./detect/detector.ts";
export { Fencing } from "./detect/fencing.ts";
export { type Condition, Monitor } from "./detect/monitor.ts";
export { PhiAccrual, type PhiOptions } from "./detect/phi-accrual.ts";
export {
  type Certainty,
  type Evidence,
  FAILURE_KINDS,
  type FailureKind,
  type FailureReport,
  type RecoveredReport,
  type ReportEvent,
  type ReportFilter,
} from "./detect/report.ts";
export {
  type ChannelError,
  type DurableHandlers,
  KEN_DEFAULTS,
  KenCore,
  type KenOptions,
  type ProcessId,
  type TurnContext,
} from "./durable/ken-core.ts";
export { DurableProcess, type DurableProcessOptions } from "./durable/process.ts";
export {
  type Durability,
  type DurableStore,
  LmdbStore,
  SimDurableStore,
  VolatileStore,
} from "./durable/store.ts";
export { FUSE_DEFAULTS, FuseCore, type FuseOptions, fuseBound } from "./fuse/fuse-core.ts";
export { FuseNode, type FuseNodeOptions, type FuseNotification } from "./fuse/fuse-node.ts";
export type { FuseReason, GroupId } from "./fuse/messages.ts";
export type { MemberStatus } from "./membership/messages.ts";
export { SwimNode, type SwimNodeOptions } from "./membership/swim-node.ts";
export { type Member, SWIM_DEFAULTS, type SwimConfig } from "./membership/swim-types.ts";
export type { LinkConditions } from "./net/sim-link.ts";
export { DEFAULT_LINK } from "./net/sim-link.ts";
export { SimNetwork } from "./net/sim-network.ts";
export { SimTransport, type SimTransportOptions } from "./net/sim-transport.ts";
export { TCP_DEFAULTS, type TcpTransportOptions } from "./net/tcp-options.ts";
export { TcpTransport } from "./net/tcp-transport.ts";
export type {
  Address,
  ConnectionEvent,
  ConnectionEventKind,
  NodeId,
  Transport,
  TransportStats,
} from "./net/transport.ts";
export type { Clock, Timer } from "./runtime/clock.ts";
export { RealClock, realClock, sleep } from "./runtime/clock.ts";
export { decode, encode } from "./runtime/codec.ts";
export { ErrorCode, FaultlineError, FrameError, isFaultlineError } from "./runtime/errors.ts";
export type { Logger, LoggerOptions } from "./runtime/logger.ts";
export { createLogger, silentLogger } from "./runtime/logger.ts";
export { createRegistry, Registry } from "./runtime/metrics.ts";
export type { Rng } from "./runtime/rng.ts";
export { createRng } from "./runtime/rng.ts";
export { VirtualClock } from "./runtime/virtual-clock.ts";
export { applyFaults, type Fault, randomFaults, type ScheduledFault } from "./sim/faults.ts";
export { MemoryStore } from "./sim/memory-store.ts";
export { PingNode, type PingOptions } from "./sim/ping.ts";
export type { Scenario } from "./sim/scenario.ts";
export { scenarios } from "./sim/scenarios/index.ts";
export {
  type Invariant,
  type SimContext,
  type SimNode,
  Simulation,
  SimulationFailure,
  type SimulationOptions,
  type SimulationResult,
} from "./sim/simulation.ts";
export { runSwarm } from "./sim/swarm.ts";
