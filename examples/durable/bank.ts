/**
 * The durable pipeline of examples/durable: a source of transfers, a bank that applies them to
 * ten accounts (a transfer the payer cannot cover is rejected, so the outcome depends on the
 * order), and an audit that totals what the bank did. Each is an independent durable process;
 * only channels join them. `expected(n)` replays transfers 1..n in order, in memory: the
 * independent record the pipeline's results are checked against.
 */
import type { DurableHandlers } from "../../src/durable/ken-core.ts";

export const ACCOUNTS = 10;
export const OPENING_BALANCE = 1000;

export interface Transfer {
  i: number;
  from: number;
  to: number;
  amount: number;
}

/** Transfer number i (1, 2, ...): a fixed function of i, so anyone can recompute it. */
export function transfer(i: number): Transfer {
  const from = i % ACCOUNTS;
  let to = (i * 7 + 3) % ACCOUNTS;
  if (to === from) to = (to + 1) % ACCOUNTS;
  return { i, from, to, amount: ((i * 37) % 250) + 1 };
}

export interface SourceState {
  n: number;
}
export interface BankState {
  last: number;
  balances: number[];
  accepted: number;
  rejected: number;
  /** Transfers that arrived out of order or twice (must stay empty). */
  bad: string[];
}
export interface AuditState {
  last: number;
  applied: number;
  accepted: number;
  moved: number;
  bad: string[];
}

/** Produces transfers 1..limit, one per local input. */
export const source = (bank: string, limit: number): DurableHandlers<SourceState> => ({
  initial: () => ({ n: 0 }),
  onInput(ctx) {
    if (ctx.state.n >= limit) return;
    ctx.state.n++;
    ctx.send(bank, transfer(ctx.state.n));
  },
});

export const bank = (audit: string): DurableHandlers<BankState> => ({
  initial: () => ({
    last: 0,
    balances: Array(ACCOUNTS).fill(OPENING_BALANCE),
    accepted: 0,
    rejected: 0,
    bad: [],
  }),
  onMessage(ctx, _from, m) {
    const t = m as Transfer;
    const s = ctx.state;
    if (t.i !== s.last + 1) s.bad.push(`bank got transfer ${t.i} after ${s.last}`);
    s.last = t.i;
    const ok = s.balances[t.from]! >= t.amount;
    if (ok) {
      s.balances[t.from]! -= t.amount;
      s.balances[t.to]! += t.amount;
      s.accepted++;
    } else s.rejected++;
    ctx.send(audit, { i: t.i, ok, amount: t.amount });
  },
});

export const audit = (report: (line: string) => void): DurableHandlers<AuditState> => ({
  initial: () => ({ last: 0, applied: 0, accepted: 0, moved: 0, bad: [] }),
  onMessage(ctx, _from, m) {
    const r = m as { i: number; ok: boolean; amount: number };
    const s = ctx.state;
    if (r.i !== s.last + 1) s.bad.push(`audit got record ${r.i} after ${s.last}`);
    s.last = r.i;
    s.applied++;
    if (r.ok) {
      s.accepted++;
      s.moved += r.amount;
    }
    // Output commit: the line leaves only once this turn is durable, so it never over-reports.
    if (s.applied % 1000 === 0) {
      const line = JSON.stringify({ applied: s.applied, accepted: s.accepted, moved: s.moved });
      ctx.output(() => report(line));
    }
  },
});

/** What the bank and the audit must hold after transfers 1..n, each applied once, in order. */
export function expected(n: number): { bank: Omit<BankState, "bad">; audit: Omit<AuditState, "bad"> } {
  const balances = Array(ACCOUNTS).fill(OPENING_BALANCE) as number[];
  let accepted = 0;
  let moved = 0;
  for (let i = 1; i <= n; i++) {
    const t = transfer(i);
    if (balances[t.from]! >= t.amount) {
      balances[t.from]! -= t.amount;
      balances[t.to]! += t.amount;
      accepted++;
      moved += t.amount;
    }
  }
  return {
    bank: { last: n, balances, accepted, rejected: n - accepted },
    audit: { last: n, applied: n, accepted, moved },
  };
}
