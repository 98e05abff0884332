/*
 * Poly1305 (RFC 8439 §2.5) through the OpenSSL that Node itself links, as a Node-API addon.
 *
 * Why: the frame MAC (src/runtime/mac.ts) is one Poly1305 pass per frame under a one-time key.
 * libsodium's Poly1305 (sodium-native) is its portable SSE2 code, ~1.1 µs for 4 KiB and up to
 * twice that for lengths that are not a multiple of 16; OpenSSL's is its hand-written assembly for
 * the CPU at hand (AVX2, AVX-512 IFMA), ~0.5 µs. node:crypto exposes no bare Poly1305 (only
 * ChaCha20-Poly1305, as an object made per message), so the call goes through OpenSSL's public
 * EVP_MAC interface from here. No cryptography is implemented in this file: it passes buffers.
 *
 * The function is the same as libsodium's crypto_onetimeauth, bit for bit (tested), so using it
 * or not is a local choice of speed that the peer cannot see. src/runtime/poly1305.ts builds and
 * loads it, and checks it against the RFC's test vector before use.
 *
 * poly1305(out, key, data, end): out[0..16) = Poly1305 of data[0..end) under key[0..32).
 */
#include <node_api.h>
#include <openssl/evp.h>
#include <stdlib.h>

typedef struct {
  EVP_MAC *mac;
  EVP_MAC_CTX *ctx;
} State;

static void free_state(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  State *s = data;
  if (s->ctx) EVP_MAC_CTX_free(s->ctx);
  if (s->mac) EVP_MAC_free(s->mac);
  free(s);
}

static int buffer_arg(napi_env env, napi_value v, unsigned char **data, size_t *len, const char *what) {
  bool ok = false;
  if (napi_is_buffer(env, v, &ok) != napi_ok || !ok) {
    napi_throw_type_error(env, NULL, what);
    return 0;
  }
  void *p;
  if (napi_get_buffer_info(env, v, &p, len) != napi_ok) {
    napi_throw_type_error(env, NULL, what);
    return 0;
  }
  *data = p;
  return 1;
}

static napi_value poly1305(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  State *s;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, (void **)&s) != napi_ok || argc != 4) {
    napi_throw_type_error(env, NULL, "poly1305(out, key, data, end): four arguments");
    return NULL;
  }
  unsigned char *out, *key, *data;
  size_t out_len, key_len, data_len;
  uint32_t end;
  if (!buffer_arg(env, argv[0], &out, &out_len, "poly1305: out must be a Buffer") ||
      !buffer_arg(env, argv[1], &key, &key_len, "poly1305: key must be a Buffer") ||
      !buffer_arg(env, argv[2], &data, &data_len, "poly1305: data must be a Buffer"))
    return NULL;
  if (napi_get_value_uint32(env, argv[3], &end) != napi_ok || end > data_len || out_len < 16 ||
      key_len != 32) {
    napi_throw_range_error(env, NULL, "poly1305: out needs 16 bytes, key 32, and end <= data.length");
    return NULL;
  }
  size_t written = 0;
  if (!EVP_MAC_init(s->ctx, key, 32, NULL) || !EVP_MAC_update(s->ctx, data, end) ||
      !EVP_MAC_final(s->ctx, out, &written, 16) || written != 16) {
    napi_throw_error(env, NULL, "poly1305: OpenSSL's EVP_MAC failed");
    return NULL;
  }
  return NULL;
}

NAPI_MODULE_INIT() {
  State *s = calloc(1, sizeof(State));
  if (!s) {
    napi_throw_error(env, NULL, "poly1305: out of memory");
    return NULL;
  }
  s->mac = EVP_MAC_fetch(NULL, "POLY1305", NULL);
  s->ctx = s->mac ? EVP_MAC_CTX_new(s->mac) : NULL;
  if (!s->ctx) {
    free_state(env, s, NULL);
    napi_throw_error(env, NULL, "poly1305: this Node's OpenSSL has no POLY1305 MAC");
    return NULL;
  }
  /* One context per Node environment (each worker thread loads its own instance). */
  if (napi_set_instance_data(env, s, free_state, NULL) != napi_ok) {
    free_state(env, s, NULL);
    return NULL;
  }
  napi_value fn;
  if (napi_create_function(env, "poly1305", NAPI_AUTO_LENGTH, poly1305, s, &fn) != napi_ok ||
      napi_set_named_property(env, exports, "poly1305", fn) != napi_ok)
    return NULL;
  return exports;
}
