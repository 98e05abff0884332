import { Command, CommanderError } from "commander";
import { isFaultlineError } from "../runtime/errors.ts";
import { registerAgent } from "./agent-command.ts";
import { registerCoord } from "./coord-command.ts";
import { registerNode } from "./node-command.ts";
import { registerSim } from "./sim-command.ts";
import { registerUp } from "./up-command.ts";
import { registerWatch } from "./watch-command.ts";

export function buildProgram(): Command {
  const program = new Command("faultline")
    .description("typed, fast failure detection and the building blocks that react to it")
    .version("0.1.0")
    .showHelpAfterError()
    .exitOverride();
  registerUp(program);
  registerNode(program);
  registerAgent(program);
  registerCoord(program);
  registerWatch(program);
  registerSim(program);
  return program;
}

export async function main(argv: string[]): Promise<void> {
  try {
    await buildProgram().parseAsync(argv);
  } catch (e) {
    if (e instanceof CommanderError) {
      process.exitCode = e.exitCode;
      return;
    }
    if (isFaultlineError(e)) {
      console.error(`faultline: ${e.message} [${e.code}]`);
      process.exitCode = 2;
      return;
    }
    throw e;
  }
}

await main(process.argv);
