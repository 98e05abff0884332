/** Long-running components implement start()/stop(); stop() is idempotent and releases everything. */
export interface Service {
  start(): Promise<void>;
  stop(): Promise<void>;
}

export interface AbortOptions {
  signal?: AbortSignal;
}
