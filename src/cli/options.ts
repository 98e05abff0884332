import type { Command } from "commander";
import type { Logger } from "pino";
import { z } from "zod";
import { AgentClient } from "../agent/agent-client.ts";
import { type FencingConfig, fencingConfig } from "../agent/lease.ts";
import { ErrorCode, FaultlineError } from "../runtime/errors.ts";

/** "1500", "1500ms", "30s", "2m" -> milliseconds. */
export function parseDuration(text: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text.trim());
  if (!m) throw new Error(`"${text}" is not a duration: use e.g. 500ms, 30s, 2m`);
  const n = Number(m[1]);
  const unit = m[2] ?? "ms";
  return n * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[unit]!;
}

export const duration = z.string().transform((s, ctx) => {
  try {
    return parseDuration(s);
  } catch (e) {
    ctx.addIssue({ code: "custom", message: (e as Error).message });
    return z.NEVER;
  }
});

export const intString = (min: number, max: number) =>
  z
    .string()
    .regex(/^\d+$/, "must be a whole number")
    .transform(Number)
    .pipe(z.number().int().min(min).max(max));

export const port = intString(0, 65535);

/** Validate CLI options with zod; a failure becomes a FL_BAD_CONFIG error a person can act on. */
export function validate<T extends z.ZodType>(schema: T, input: unknown, what: string): z.output<T> {
  const r = schema.safeParse(input);
  if (r.success) return r.data;
  const lines = r.error.issues.map((i) => `  --${i.path.join(".")}: ${i.message}`);
  throw new FaultlineError(ErrorCode.BadConfig, `invalid ${what}:\n${lines.join("\n")}`);
}

/** The cluster key: 64 hex characters (32 bytes), from an option or FAULTLINE_CLUSTER_KEY. */
export function parseClusterKey(hex: string | undefined): Buffer {
  if (!hex) {
    throw new FaultlineError(
      ErrorCode.BadConfig,
      "no cluster key: set FAULTLINE_CLUSTER_KEY to 64 hex characters (e.g. `openssl rand -hex 32`), the same on every node",
    );
  }
  if (!/^[0-9a-fA-F]{32,}$/.test(hex) || hex.length % 2 !== 0) {
    throw new FaultlineError(
      ErrorCode.BadConfig,
      "the cluster key must be an even number (>= 32) of hex characters, e.g. from `openssl rand -hex 32`",
    );
  }
  return Buffer.from(hex, "hex");
}

/** A node, member or host name: what ids on the wire may be. */
export const name = z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, "use 1-64 letters, digits, '.', '_' or '-'");

export const logLevel = z.enum(["trace", "debug", "info", "warn", "error", "silent"]);

/**
 * Register this process with its host agent when `--agent-socket` is given (then `--agent-id`
 * must be too), so that its exit becomes a certain report.
 */
export async function registerWithAgent(
  o: { id: string; agentSocket?: string | undefined; agentId?: string | undefined; key: Buffer },
  boot: string,
  logger: Logger,
): Promise<AgentClient | undefined> {
  if (!o.agentSocket) return undefined;
  if (!o.agentId)
    throw new FaultlineError(ErrorCode.BadConfig, "--agent-socket needs --agent-id (agent:<host>) too");
  const agent = new AgentClient({
    id: o.id,
    agentId: o.agentId,
    socketPath: o.agentSocket,
    clusterKey: o.key,
    boot,
    logger,
  });
  await agent.start();
  return agent;
}

/** SWIM timing options shared by `faultline node` and `faultline agent` (memberlist LAN defaults). */
export const swimOptions = {
  probeInterval: duration,
  probeTimeout: duration,
  suspicionMult: intString(1, 100),
};

export function addSwimOptions(cmd: Command): Command {
  return cmd
    .option("--probe-interval <time>", "SWIM probe interval (memberlist LAN: 1s)", "1s")
    .option("--probe-timeout <time>", "SWIM direct probe timeout (memberlist LAN: 500ms)", "500ms")
    .option("--suspicion-mult <n>", "SWIM suspicion multiplier (memberlist LAN: 4)", "4");
}

export function swimConfig(o: { probeInterval: number; probeTimeout: number; suspicionMult: number }) {
  return { probeIntervalMs: o.probeInterval, probeTimeoutMs: o.probeTimeout, suspicionMult: o.suspicionMult };
}

/** Lease and fence options shared by `faultline node` and `faultline agent` (agent/lease.ts). */
export const fencingOptions = {
  witnesses: z.string().optional(),
  leaseTime: duration,
  processLeaseTime: duration,
};

export function addFencingOptions(cmd: Command): Command {
  return cmd
    .option(
      "--witnesses <ids>",
      "members that grant leases and record fences, comma-separated, the same list on every member (an odd number, e.g. 3); with them a silent host's crash becomes certain",
    )
    .option("--lease-time <time>", "the agents' cluster lease", "4s")
    .option("--process-lease-time <time>", "a process's lease from its agent (at most half the lease)", "1s");
}

/** The fencing configuration, or undefined when no witnesses are named (fencing off). */
export function fencingFromOptions(o: {
  witnesses?: string | undefined;
  leaseTime: number;
  processLeaseTime: number;
}): FencingConfig | undefined {
  if (!o.witnesses) return undefined;
  const witnesses = o.witnesses
    .split(",")
    .map((w) => w.trim())
    .filter((w) => w.length > 0);
  try {
    return fencingConfig({ witnesses, leaseMs: o.leaseTime, processLeaseMs: o.processLeaseTime });
  } catch (e) {
    throw new FaultlineError(ErrorCode.BadConfig, `invalid fencing options: ${(e as Error).message}`);
  }
}
