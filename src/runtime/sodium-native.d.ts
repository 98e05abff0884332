// The part of sodium-native (libsodium bindings) faultline uses; the package ships no types.
declare module "sodium-native" {
  const sodium: {
    /** ChaCha20 (RFC 8439, 96-bit nonce) keystream from block counter 0, filling `c`. */
    crypto_stream_chacha20_ietf(c: Uint8Array, n: Uint8Array, k: Uint8Array): void;
    /** Poly1305 of `input` under the one-time key `k` (32 bytes) into `out` (16 bytes). */
    crypto_onetimeauth(out: Uint8Array, input: Uint8Array, k: Uint8Array): void;
  };
  export default sodium;
}
