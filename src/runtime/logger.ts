import { type Logger, pino } from "pino";

export type { Logger } from "pino";

export interface LoggerOptions {
  /** pino level; default "info". Use "silent" to turn logging off. */
  level?: string;
  /** Name shown on every line (e.g. the node id). */
  name?: string;
  /** Write to this file descriptor instead of stdout (2 = stderr). */
  fd?: number;
}

/** A pino logger writing JSON lines. Components take one and call `.child({ component })`. */
export function createLogger(options: LoggerOptions = {}): Logger {
  const level = options.level ?? "info";
  const base = options.name === undefined ? {} : { name: options.name };
  if (options.fd !== undefined)
    return pino({ level, ...base }, pino.destination({ fd: options.fd, sync: true }));
  return pino({ level, ...base });
}

/** A logger that writes nothing: the default for library components. */
export function silentLogger(): Logger {
  return pino({ level: "silent" });
}
