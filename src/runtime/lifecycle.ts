/** Long-running components implement start()/stop(); stop() is idempotent and releases everything. */
export interface Service {
  start(): Promise<void>;
  stop(): Promise<void>;
}
