import type { Command } from "commander";
import { z } from "zod";
import { FENCED_EXIT_CODE, HostAgent } from "../agent/host-agent.ts";
import { createLogger } from "../runtime/logger.ts";
import { superviseLifecycle, tellSupervisor } from "./ipc.ts";
import { parsePeers } from "./node-command.ts";
import {
  addFencingOptions,
  addSwimOptions,
  fencingFromOptions,
  fencingOptions,
  logLevel,
  name,
  parseClusterKey,
  port,
  swimConfig,
  swimOptions,
  validate,
} from "./options.ts";

const AgentOptions = z.object({
  host: name,
  socket: z.string().min(1),
  listen: z.string().min(1),
  port,
  peers: z.string().optional(),
  ...swimOptions,
  ...fencingOptions,
  logLevel,
});

export function registerAgent(program: Command): void {
  addFencingOptions(addSwimOptions(program.command("agent")))
    .description(
      "run the host agent: local processes register on a Unix socket; their exits are reported as certain",
    )
    .requiredOption("--host <name>", "this host's name (the agent's id is agent:<name>)")
    .requiredOption("--socket <path>", "Unix socket local processes register on")
    .option("--listen <host>", "address to listen on for the cluster", "127.0.0.1")
    .option("--port <port>", "cluster port (0: any free port)", "0")
    .option("--peers <list>", "cluster members to join, as id=host:port,...")
    .option("--log-level <level>", "log level (logs go to stderr)", "warn")
    .addHelpText("after", "\nThe cluster key comes from FAULTLINE_CLUSTER_KEY (hex, the same on every node).")
    .action(async (raw) => {
      const o = validate(AgentOptions, raw, "agent options");
      const key = parseClusterKey(process.env.FAULTLINE_CLUSTER_KEY);
      const logger = createLogger({ level: o.logLevel, name: `agent:${o.host}`, fd: 2 });
      const fencing = fencingFromOptions(o);
      const agent = new HostAgent({
        host: o.host,
        socketPath: o.socket,
        clusterKey: key,
        listenHost: o.listen,
        port: o.port,
        seeds: parsePeers(o.peers),
        swim: swimConfig(o),
        logger,
        ...(fencing ? { fencing, onFenced: (why: string) => fenced(why) } : {}),
      });
      const fenced = (why: string) => {
        logger.error(
          { why },
          `fenced: registered processes killed; exiting with code ${FENCED_EXIT_CODE} for a new life`,
        );
        void agent.stop().finally(() => process.exit(FENCED_EXIT_CODE));
      };
      await agent.start();
      const tell = tellSupervisor;
      tell({ type: "listening", id: agent.id, address: agent.cluster.address(), boot: agent.cluster.boot });
      const subscribe = () =>
        agent.detection?.monitor.subscribe({}, (report) =>
          // real-io: the publication's moment on the host's monotonic clock
          tell({ type: "report", id: agent.id, report, mono: Number(process.hrtime.bigint()) / 1e6 }),
        );
      subscribe();
      superviseLifecycle(
        () => agent.stop(),
        (m) => {
          if (m.type !== "peers") return;
          const first = agent.detection === undefined;
          agent.join(m.peers);
          if (first) subscribe();
        },
      );
    });
}
