import { copyValue } from "../runtime/clone.ts";

/**
 * A node's stable storage in simulation: it survives the node's crash and restart, unlike
 * everything the node holds in memory. Values are deep-copied in and out so that a node cannot
 * keep a live reference into "disk".
 */
export class MemoryStore {
  private readonly data = new Map<string, unknown>();

  get<T>(key: string): T | undefined {
    const v = this.data.get(key);
    return v === undefined ? undefined : copyValue(v as T);
  }

  put(key: string, value: unknown): void {
    this.data.set(key, copyValue(value));
  }

  delete(key: string): void {
    this.data.delete(key);
  }

  keys(prefix = ""): string[] {
    return [...this.data.keys()].filter((k) => k.startsWith(prefix)).sort();
  }
}
