import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { basename, dirname, join } from "node:path";
import sodium from "sodium-native";
import { ownedPrivate } from "./owned.ts";
import { packageRoot } from "./package-root.ts";

/**
 * Poly1305 (RFC 8439 §2.5): a 16-byte tag of `data[0, end)` under a 32-byte one-time key, into
 * `out[0, 16)`. Two implementations of the one function, bit for bit: OpenSSL's (the assembly for
 * the CPU at hand, through native/poly1305.c, ~0.5 µs for 4 KiB) when that addon was built, else
 * libsodium's portable one (sodium-native, ~1.1–2.3 µs for 4 KiB). Which one runs is a local
 * matter of speed: a peer cannot tell.
 */
export type Poly1305 = (out: Buffer, key: Buffer, data: Buffer, end: number) => void;

const require = createRequire(import.meta.url);

const sodiumPoly1305: Poly1305 = (out, key, data, end) => {
  sodium.crypto_onetimeauth(out, end === data.length ? data : data.subarray(0, end), key);
};

/** RFC 8439 §2.5.2's test vector: a build that does not reproduce it is not used. */
const RFC_KEY = Buffer.from("85d6be7857556d337f4452fe42d506a80103808afb0db2fd4abff6af4149f51b", "hex");
const RFC_MSG = Buffer.from("Cryptographic Forum Research Group");
const RFC_TAG = Buffer.from("a8061dc1305136c6c22b8baf0c0127a9", "hex");

export function passesTestVector(f: Poly1305): boolean {
  const out = Buffer.alloc(16);
  f(out, RFC_KEY, RFC_MSG, RFC_MSG.length);
  return out.equals(RFC_TAG);
}

/**
 * The addon's source and where its build lives: named by a hash of the source and of what it was
 * built for (platform, CPU, Node's ABI and OpenSSL), so a build for another Node is never loaded.
 */
export function addonPaths(root = packageRoot() ?? "."): { source: string; binary: string } {
  const source = join(root, "native", "poly1305.c");
  const v = process.versions;
  const hash = existsSync(source)
    ? createHash("sha256")
        .update(readFileSync(source))
        .update(`${process.platform} ${process.arch} ${v.modules} ${v.napi} ${v.openssl}`)
        .digest("hex")
        .slice(0, 16)
    : "missing";
  return { source, binary: join(root, "build", "native", `poly1305-${hash}.node`) };
}

/**
 * Ours (or root's) and writable by no one else, and not a symbolic link: we load it into our
 * process, which may run as root (the host agent). Where there are no POSIX owners, any.
 */
function trusted(path: string): boolean {
  return process.getuid === undefined || ownedPrivate(path, { rootToo: true });
}

/** Directories that may hold Node's C headers (node_api.h and, when Node bundles it, openssl/). */
function nodeIncludeDirs(): string[] {
  const prefix = join(dirname(process.execPath), "..");
  return [join(prefix, "include", "node"), "/usr/include/node", "/usr/local/include/node"].filter((d) =>
    existsSync(join(d, "node_api.h")),
  );
}

/**
 * Compile native/poly1305.c with the host's C compiler ($CC, else cc) against this Node's headers;
 * the OpenSSL symbols are resolved from the running Node at load time. Throws with the compiler's
 * words when it cannot. Used by `npm install` (scripts/build-native.ts).
 */
export function buildAddon(root = packageRoot() ?? "."): string {
  const { source, binary } = addonPaths(root);
  if (!existsSync(source)) throw new Error(`${source} is missing`);
  const includes = nodeIncludeDirs();
  if (includes.length === 0) {
    throw new Error(
      `no Node C headers (node_api.h) beside ${process.execPath} or in /usr/include/node: install the headers of this Node`,
    );
  }
  mkdirSync(dirname(binary), { recursive: true });
  const tmp = `${binary}.${process.pid}.tmp.node`; // .node: require() loads it as an addon
  const cc = process.env.CC ?? "cc";
  try {
    execFileSync(
      cc,
      [
        "-O2",
        "-Wall",
        "-fPIC",
        "-shared",
        ...includes.map((d) => `-I${d}`),
        "-o",
        tmp,
        source,
        // Bind every symbol at load: a Node without OpenSSL's EVP_MAC then fails the require (and
        // faultline falls back) instead of aborting at the first call.
        ...(process.platform === "darwin" ? ["-undefined", "dynamic_lookup"] : ["-Wl,-z,now"]),
      ],
      { stdio: ["ignore", "ignore", "pipe"], timeout: 120_000 },
    );
    const built = require(tmp) as { poly1305?: Poly1305 };
    if (typeof built.poly1305 !== "function" || !passesTestVector(built.poly1305))
      throw new Error("the build does not reproduce RFC 8439's Poly1305 test vector");
    renameSync(tmp, binary); // atomic: a concurrent process never loads a half-written file
    // Builds of other sources or for another Node are of no more use.
    for (const f of readdirSync(dirname(binary)))
      if (/^poly1305-[0-9a-f]{16}\.node$/.test(f) && f !== basename(binary)) rmSync(join(dirname(binary), f));
  } catch (err) {
    rmSync(tmp, { force: true });
    const stderr = (err as { stderr?: Buffer }).stderr?.toString().trim();
    throw new Error(`could not build ${source} with ${cc}: ${stderr || (err as Error).message}`);
  }
  return binary;
}

/** The addon built under `root` if it is there, ours, and right; else libsodium's, and why. */
export function loadPoly1305(root = packageRoot()): {
  impl: "openssl" | "libsodium";
  poly1305: Poly1305;
  why?: string;
} {
  const fallback = (why: string) => ({ impl: "libsodium" as const, poly1305: sodiumPoly1305, why });
  if (process.env.FAULTLINE_POLY1305 === "libsodium") return fallback("FAULTLINE_POLY1305=libsodium");
  if (root === undefined) return fallback("faultline's package root was not found beside this module");
  const { binary } = addonPaths(root);
  if (!existsSync(binary)) return fallback(`${binary} is not built (npm install builds it)`);
  try {
    if (!trusted(binary) || !trusted(dirname(binary)))
      return fallback(`${binary} or its directory is not ours alone (owner or mode): not loaded`);
    const addon = require(binary) as { poly1305?: Poly1305 };
    if (typeof addon.poly1305 === "function" && passesTestVector(addon.poly1305))
      return { impl: "openssl", poly1305: addon.poly1305 };
    return fallback(`${binary} does not reproduce RFC 8439's test vector`);
  } catch (err) {
    return fallback(`${binary} does not load: ${(err as Error).message}`);
  }
}

const loaded = loadPoly1305();

/** Poly1305 as fast as this process can do it (see Poly1305). */
export const poly1305: Poly1305 = loaded.poly1305;
/** libsodium's, always available (tests compare the two). */
export const poly1305Sodium: Poly1305 = sodiumPoly1305;
/** Which implementation `poly1305` is, and, when it is the fallback, why. */
export const poly1305Impl: { impl: "openssl" | "libsodium"; why?: string } =
  loaded.why === undefined ? { impl: loaded.impl } : { impl: loaded.impl, why: loaded.why };
