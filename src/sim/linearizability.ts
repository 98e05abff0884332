/**
 * A linearizability checker (Wing & Gong's search with Lowe's memoisation, as in Porcupine): is
 * there an order of the operations, consistent with real time, in which every one of them gives
 * the result it gave under a sequential model? Operations that never returned (a client gave up,
 * a node crashed) may take effect at any point after their call, or never.
 *
 * Linearizability is local (Herlihy & Wing): a history of single-key operations is linearizable
 * iff each key's sub-history is, so callers check key by key (`partition`).
 */

export interface Operation<I, O> {
  /** Call and return times; `ret` undefined: it never returned. */
  call: number;
  ret: number | undefined;
  input: I;
  /** Ignored when the operation never returned. */
  output: O | undefined;
}

export interface Model<S, I, O> {
  init(): S;
  /**
   * Apply `input` in state `s`: the states it can lead to when it returned `output`
   * (`output` undefined: it never returned, so any outcome is possible). Empty: impossible.
   */
  step(s: S, input: I, output: O | undefined): S[];
  /** A stable key for a state (memoisation). */
  key(s: S): string;
}

export interface CheckResult {
  ok: boolean;
  /** The search gave up (too many states): the history is neither proven nor refuted. */
  unknown?: boolean;
  /** On failure: the longest prefix that could be linearized, as operation indexes. */
  longest?: number[];
}

interface Node {
  op: number;
  isCall: boolean;
  time: number;
  prev: Node | undefined;
  next: Node | undefined;
  match: Node | undefined;
}

/**
 * Check one history. Pending operations (no return) are given a return after everything else.
 * `budget` bounds the states visited (a pathological history reports `unknown`, never a false verdict).
 */
export function checkLinearizable<S, I, O>(
  model: Model<S, I, O>,
  ops: readonly Operation<I, O>[],
  budget = 1_000_000,
): CheckResult {
  if (ops.length === 0) return { ok: true };
  const end = Math.max(...ops.map((o) => Math.max(o.call, o.ret ?? o.call))) + 1;
  const events: Array<{ op: number; isCall: boolean; time: number }> = [];
  ops.forEach((o, i) => {
    events.push({ op: i, isCall: true, time: o.call });
    events.push({ op: i, isCall: false, time: o.ret ?? end });
  });
  // Calls before returns at equal times: operations that touch in time count as concurrent.
  events.sort((a, b) => a.time - b.time || (a.isCall === b.isCall ? a.op - b.op : a.isCall ? -1 : 1));
  const head: Node = { op: -1, isCall: false, time: -1, prev: undefined, next: undefined, match: undefined };
  let tail = head;
  const calls = new Map<number, Node>();
  for (const e of events) {
    const n: Node = { ...e, prev: tail, next: undefined, match: undefined };
    tail.next = n;
    tail = n;
    if (e.isCall) calls.set(e.op, n);
    else {
      const c = calls.get(e.op)!;
      c.match = n;
      n.match = c;
    }
  }
  const lift = (c: Node) => {
    c.prev!.next = c.next;
    if (c.next) c.next.prev = c.prev;
    const r = c.match!;
    r.prev!.next = r.next;
    if (r.next) r.next.prev = r.prev;
  };
  const unlift = (c: Node) => {
    const r = c.match!;
    r.prev!.next = r;
    if (r.next) r.next.prev = r;
    c.prev!.next = c;
    if (c.next) c.next.prev = c;
  };
  // The set of linearized operations, as two 32-bit Zobrist hashes (XOR of a fixed random word per
  // operation): O(1) to update, and a collision among a few million sets is vanishingly unlikely.
  const z1 = new Uint32Array(ops.length);
  const z2 = new Uint32Array(ops.length);
  let x = 0x9e3779b9;
  const word = () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return x >>> 0;
  };
  for (let i = 0; i < ops.length; i++) {
    z1[i] = word();
    z2[i] = word();
  }
  let h1 = 0;
  let h2 = 0;
  const toggle = (op: number) => {
    h1 = (h1 ^ z1[op]!) >>> 0;
    h2 = (h2 ^ z2[op]!) >>> 0;
  };
  const seen = new Set<string>();
  const stack: Array<{ call: Node; state: S; alternatives: S[] }> = [];
  let state = model.init();
  let longest: number[] = [];
  let visited = 0;
  let entry = head.next;
  while (head.next) {
    if (++visited > budget) return { ok: false, unknown: true };
    if (entry === undefined) return { ok: false, longest };
    if (entry.isCall) {
      const o = ops[entry.op]!;
      const pending = o.ret === undefined;
      const outcomes = model.step(state, o.input, pending ? undefined : o.output);
      let advanced = false;
      while (outcomes.length) {
        const next = outcomes.shift()!;
        toggle(entry.op);
        const k = `${h1}.${h2}|${model.key(next)}`;
        if (!seen.has(k)) {
          seen.add(k);
          stack.push({ call: entry, state, alternatives: outcomes });
          state = next;
          lift(entry);
          entry = head.next;
          advanced = true;
          break;
        }
        toggle(entry.op);
      }
      if (!advanced) entry = entry.next;
      if (stack.length > longest.length) longest = stack.map((f) => f.call.op);
      continue;
    }
    // A return whose call has not been linearized: back up.
    if (stack.length === 0) return { ok: false, longest };
    const top = stack.pop()!;
    state = top.state;
    toggle(top.call.op);
    unlift(top.call);
    // Try the same call's other outcomes before moving on.
    let resumed = false;
    while (top.alternatives.length) {
      const next = top.alternatives.shift()!;
      toggle(top.call.op);
      const k = `${h1}.${h2}|${model.key(next)}`;
      if (!seen.has(k)) {
        seen.add(k);
        stack.push({ call: top.call, state, alternatives: top.alternatives });
        state = next;
        lift(top.call);
        entry = head.next;
        resumed = true;
        break;
      }
      toggle(top.call.op);
    }
    if (!resumed) entry = top.call.next;
  }
  return { ok: true };
}

/** Split a history by key (linearizability is local). */
export function partition<I extends { key: string }, O>(
  ops: readonly Operation<I, O>[],
): Map<string, Operation<I, O>[]> {
  const out = new Map<string, Operation<I, O>[]>();
  for (const o of ops) {
    const l = out.get(o.input.key);
    if (l) l.push(o);
    else out.set(o.input.key, [o]);
  }
  return out;
}

// ---- a register with put / get / compare-and-swap ------------------------------------------------

export type RegisterInput =
  | { key: string; op: "put"; value: string }
  | { key: string; op: "get" }
  | { key: string; op: "cas"; from: string | null; to: string };
/** put: null; get: the value (null when absent); cas: whether it swapped. */
export type RegisterOutput = string | null | boolean;

export const registerModel: Model<string | null, RegisterInput, RegisterOutput> = {
  init: () => null,
  key: (s) => (s === null ? "\u0000" : `v${s}`),
  step(s, i, out) {
    switch (i.op) {
      case "put":
        return [i.value];
      case "get":
        return out === undefined || out === s ? [s] : [];
      case "cas": {
        const swaps = s === i.from;
        if (out === undefined) return [swaps ? i.to : s];
        return out === swaps ? [swaps ? i.to : s] : [];
      }
    }
  },
};
