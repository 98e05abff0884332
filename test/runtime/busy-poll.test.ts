import { describe, expect, it } from "vitest";
import { BusyPoller } from "../../src/runtime/busy-poll.ts";

const turn = () => new Promise<void>((r) => setImmediate(r)); // real-io: event-loop turns are the subject
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms)); // real-io: the budget is real time

describe("BusyPoller", () => {
  it("turns the loop while something waits, and stops as soon as nothing does", async () => {
    let waiting = true;
    const p = new BusyPoller(() => waiting, 10_000);
    p.kick();
    for (let i = 0; i < 10; i++) await turn();
    expect(p.turns).toBeGreaterThanOrEqual(5);
    waiting = false;
    await turn();
    await turn();
    const after = p.turns;
    for (let i = 0; i < 10; i++) await turn();
    expect(p.turns).toBe(after);
    // A later wait starts it again.
    waiting = true;
    p.kick();
    for (let i = 0; i < 10; i++) await turn();
    expect(p.turns).toBeGreaterThan(after);
    p.stop();
  });

  it("polls one wait for at most its budget, then lets the loop sleep; a kick gives a new budget", async () => {
    const p = new BusyPoller(() => true, 5);
    p.kick();
    await sleep(60);
    const spent = p.turns;
    expect(spent).toBeGreaterThan(0);
    await sleep(60);
    expect(p.turns).toBe(spent); // over budget: no more turns, though it still "waits"
    p.kick();
    await sleep(30);
    expect(p.turns).toBeGreaterThan(spent);
    p.stop();
  });

  it("does nothing with a budget of 0, or once stopped", async () => {
    const never = new BusyPoller(() => true, 0);
    never.kick();
    await sleep(10);
    expect(never.turns).toBe(0);
    const stopped = new BusyPoller(() => true, 10_000);
    stopped.kick();
    await turn();
    stopped.stop();
    await turn();
    const n = stopped.turns;
    stopped.kick();
    await sleep(10);
    expect(stopped.turns).toBe(n);
  });
});
