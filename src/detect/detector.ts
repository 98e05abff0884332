/**
 * A pluggable source of failure reports. Built-in detectors (membership, transport evidence) and
 * users' own implement it; each publishes into a Monitor it is given at construction.
 */
export interface Detector {
  /** Stable name, carried in every report it produces. */
  readonly name: string;
  start(): void;
  stop(): void;
}
