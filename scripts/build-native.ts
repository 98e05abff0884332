// `npm install` runs this: build native/poly1305.c, the frame MAC's fast path (see
// src/runtime/poly1305.ts). A failure is reported and does not fail the install: faultline then
// uses libsodium's Poly1305, which gives the same tags, slower.
import { addonPaths, buildAddon } from "../src/runtime/poly1305.ts";

try {
  const binary = buildAddon();
  console.log(`faultline: built ${binary} (Poly1305 through OpenSSL)`);
} catch (err) {
  console.warn(
    `faultline: ${(err as Error).message}\n` +
      `faultline: frames will use libsodium's Poly1305 (same tags, slower); to build ${addonPaths().binary} later: npm run build:native`,
  );
}
