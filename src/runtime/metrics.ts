import { Registry } from "prom-client";

export { Registry } from "prom-client";

/**
 * A fresh Prometheus registry. Components take one (optionally) and register their metrics in it;
 * there is no global registry, so several nodes in one process keep their metrics apart by label.
 */
export function createRegistry(): Registry {
  return new Registry();
}
