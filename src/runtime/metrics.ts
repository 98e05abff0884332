import { Counter, Gauge, Histogram, Registry } from "prom-client";

export { Registry } from "prom-client";

/** A fresh Prometheus registry. Components take one (optionally) and register their metrics in it. */
export function createRegistry(): Registry {
  return new Registry();
}

/**
 * Get-or-create helpers: several components in one process (e.g. five simulated nodes) share a
 * registry and so the same metric, told apart by labels.
 */
export function counter<L extends string>(
  registry: Registry | undefined,
  name: string,
  help: string,
  labelNames: readonly L[] = [],
): Counter<L> {
  const existing = registry?.getSingleMetric(name);
  if (existing) return existing as Counter<L>;
  return new Counter<L>({ name, help, labelNames, registers: registry ? [registry] : [] });
}

export function gauge<L extends string>(
  registry: Registry | undefined,
  name: string,
  help: string,
  labelNames: readonly L[] = [],
): Gauge<L> {
  const existing = registry?.getSingleMetric(name);
  if (existing) return existing as Gauge<L>;
  return new Gauge<L>({ name, help, labelNames, registers: registry ? [registry] : [] });
}

export function histogram<L extends string>(
  registry: Registry | undefined,
  name: string,
  help: string,
  buckets: number[],
  labelNames: readonly L[] = [],
): Histogram<L> {
  const existing = registry?.getSingleMetric(name);
  if (existing) return existing as Histogram<L>;
  return new Histogram<L>({ name, help, buckets, labelNames, registers: registry ? [registry] : [] });
}
