// The part of sodium-native (libsodium bindings) faultline uses; the package ships no types.
declare module "sodium-native" {
  const sodium: {
    /** RFC 8439 AEAD, detached tag: writes `mac` (16 bytes) and `c` (as long as `m`). */
    crypto_aead_chacha20poly1305_ietf_encrypt_detached(
      c: Uint8Array,
      mac: Uint8Array,
      m: Uint8Array,
      ad: Uint8Array | null,
      nsec: null,
      npub: Uint8Array,
      k: Uint8Array,
    ): number;
  };
  export default sodium;
}
