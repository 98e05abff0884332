import { readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

let root: string | null | undefined;

/**
 * faultline's package root, where native/, proto/ and build/ are: two levels above src/runtime
 * (or dist/runtime), three above a bundle in node_modules/.cache/faultline (the benches' and
 * tests' child processes) — whichever holds faultline's own package.json; undefined if neither.
 */
export function packageRoot(): string | undefined {
  if (root === undefined) {
    root =
      ["../../", "../../../"]
        .map((rel) => fileURLToPath(new URL(rel, import.meta.url)))
        .find((d) => {
          try {
            const pkg = JSON.parse(readFileSync(join(d, "package.json"), "utf8")) as { name?: string };
            return pkg.name === "faultline";
          } catch {
            return false;
          }
        }) ?? null;
  }
  return root ?? undefined;
}
