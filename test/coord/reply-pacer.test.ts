import { describe, expect, it } from "vitest";
import { ReplyPacer } from "../../src/coord/reply-pacer.ts";

const nextTurn = () => new Promise<void>((r) => setImmediate(r)); // real-io: event-loop turns are the subject

describe("ReplyPacer", () => {
  it("sends at most its share in a turn and the rest, in order, in the turns after", async () => {
    const pacer = new ReplyPacer(16);
    const sent: number[] = [];
    for (let i = 0; i < 40; i++) pacer.run(() => sent.push(i));
    expect(sent).toEqual([...Array(16).keys()]);
    expect(pacer.waiting).toBe(24);
    await nextTurn();
    expect(sent.length).toBe(32);
    await nextTurn();
    expect(sent).toEqual([...Array(40).keys()]);
    expect(pacer.waiting).toBe(0);
  });

  it("a reply that comes while others wait goes after them, never ahead", async () => {
    const pacer = new ReplyPacer(2);
    const sent: string[] = [];
    for (const r of ["a", "b", "c"]) pacer.run(() => sent.push(r));
    await nextTurn();
    pacer.run(() => sent.push("d"));
    pacer.run(() => sent.push("e"));
    for (let i = 0; i < 4; i++) await nextTurn();
    expect(sent).toEqual(["a", "b", "c", "d", "e"]);
  });

  it("starts each quiet turn with a full share", async () => {
    const pacer = new ReplyPacer(3);
    const sent: number[] = [];
    for (let i = 0; i < 3; i++) pacer.run(() => sent.push(i));
    for (let i = 0; i < 3; i++) await nextTurn();
    for (let i = 3; i < 6; i++) pacer.run(() => sent.push(i));
    expect(sent).toEqual([0, 1, 2, 3, 4, 5]);
  });

  it("refuses a share below one", () => {
    expect(() => new ReplyPacer(0)).toThrow(/at least 1/);
  });
});
