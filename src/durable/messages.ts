/**
 * A durable channel's frames. The transport authenticates the sender (a forged frame never gets
 * here); these checks catch a malformed one, which is dropped and counted.
 */
export type KenFrame =
  /** Message `s` (1, 2, ...) from the sender to this receiver, with its body. */
  | { p: "ken"; t: "m"; s: number; b: unknown }
  /** Cumulative acknowledgement: every message up to `u` is committed at the receiver. */
  | { p: "ken"; t: "a"; u: number };

export function isKenFrame(m: unknown): boolean {
  return typeof m === "object" && m !== null && (m as { p?: unknown }).p === "ken";
}

const isSeq = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;

export function parseKen(m: unknown): KenFrame | undefined {
  if (!isKenFrame(m)) return undefined;
  const x = m as Record<string, unknown>;
  if (x.t === "m" && isSeq(x.s) && (x.s as number) > 0 && "b" in x) return m as KenFrame;
  if (x.t === "a" && isSeq(x.u)) return m as KenFrame;
  return undefined;
}
