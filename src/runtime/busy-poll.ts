/**
 * Busy-polling: while something waits for an answer from the network, keep the event loop turning
 * (each turn polls the sockets without blocking) instead of letting it sleep in epoll_wait.
 *
 * Why: an answer that reaches a process asleep in epoll_wait first has to wake it — on a virtual
 * machine an idle vCPU halts, and waking it costs an inter-processor interrupt and a VM exit, tens
 * of microseconds (a raw node:net round trip between two processes on this project's 2-vCPU test
 * machine: p50 ~48 µs sleeping, ~28 µs polling). A loop that keeps polling sees the bytes as
 * soon as they land. The price is a core kept busy while waiting, up to `budgetMs` per wait:
 * worth it for latency-bound, lightly loaded members with cores to spare (what Mu, eRPC and DPDK
 * applications do), not where the cores are shared with the load itself.
 *
 * Real I/O only: it turns the real event loop and reads the real clock. The simulator never uses it.
 */
export class BusyPoller {
  private spinning = false;
  private since = 0;
  private stopped = false;
  /** Turns spun so far (a measure of the CPU it cost). */
  turns = 0;

  /**
   * @param waiting whether an answer is still awaited; polling stops as soon as it is false.
   * @param budgetMs the longest one wait is polled for; after it the loop sleeps as usual.
   */
  constructor(
    private readonly waiting: () => boolean,
    private readonly budgetMs: number,
  ) {}

  /** A wait began (or goes on): poll until `waiting()` is false or the budget from now is spent. */
  kick(): void {
    if (this.stopped || this.budgetMs <= 0) return;
    this.since = performance.now(); // real-io: polling is a real-time matter
    if (this.spinning) return;
    this.spinning = true;
    setImmediate(this.spin); // real-io: a turn of the real event loop
  }

  stop(): void {
    this.stopped = true;
  }

  private readonly spin = (): void => {
    // real-io: the budget is real time
    if (this.stopped || !this.waiting() || performance.now() - this.since > this.budgetMs) {
      this.spinning = false;
      return;
    }
    this.turns++;
    setImmediate(this.spin); // real-io: the next turn polls the sockets without blocking
  };
}
