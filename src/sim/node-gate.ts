import type { Gate } from "../net/sim-network.ts";
import type { Clock, Timer } from "../runtime/clock.ts";

/**
 * Everything that enters a simulated node (a timer firing, a frame arriving) passes its gate. A
 * crashed node's gate drops everything, forever (a restart makes a new gate); a paused node's gate
 * holds everything and releases it, in order, on resume — a GC stall or SIGSTOP, which delays work
 * but loses none of it.
 */
export class NodeGate implements Gate {
  state: "up" | "paused" | "down" = "up";
  hostUp = true;
  private held: Array<() => void> = [];

  constructor(private readonly clock: Clock) {}

  run(fn: () => void): void {
    if (this.state === "down") return;
    if (this.state === "paused") this.held.push(fn);
    else fn();
  }

  pause(): void {
    if (this.state === "up") this.state = "paused";
  }

  resume(): void {
    if (this.state !== "paused") return;
    this.state = "up";
    const held = this.held;
    this.held = [];
    // Each held item becomes its own step, at the current instant, in arrival order.
    for (const fn of held) this.clock.setTimer(0, () => this.run(fn));
  }

  kill(hostUp: boolean): void {
    this.state = "down";
    this.hostUp = hostUp;
    this.held = [];
  }

  get heldCount(): number {
    return this.held.length;
  }
}

/** A node's view of the virtual clock: its timers pass its gate, and cancel() is always honoured. */
export class GatedClock implements Clock {
  constructor(
    private readonly base: Clock,
    private readonly gate: Gate,
  ) {}

  now(): number {
    return this.base.now();
  }

  wallNow(): number {
    return this.base.wallNow();
  }

  setTimer(delayMs: number, fn: () => void): Timer {
    let cancelled = false;
    const t = this.base.setTimer(delayMs, () => this.gate.run(() => cancelled || fn()));
    return {
      cancel: () => {
        cancelled = true;
        t.cancel();
      },
    };
  }
}
