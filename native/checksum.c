/*
 * checksum64(buffer): a 64-bit checksum of the bytes, as a BigInt.
 *
 * Why: the executable (src/cli/bin.ts) runs the CLI from a V8 code cache, and a damaged cache
 * crashes V8 unless its checksum is checked. V8 checks it only under --verify-snapshot-checksum,
 * and setting that flag at run time means loading node:v8 (about 3 ms on the host, a module
 * load V8 pays before every protect); hashing the 300 KB file in JavaScript took about as long.
 * Here it takes tens of microseconds.
 *
 * Not cryptographic: it detects damage (a torn write, a flipped bit); whether the file may be
 * trusted at all is decided by its owner and mode. Each 8-byte word goes through
 * h = (h ^ w) * P, a bijection of h for every w, so changing any one word always changes the
 * result; the length and a final avalanche (MurmurHash3's fmix64) close it.
 */
#include <stdint.h>
#include <string.h>
#include <node_api.h>

#include "addon.h"

static uint64_t checksum64(const uint8_t *p, size_t n) {
  const uint64_t prime = 0x100000001b3ULL; /* FNV-1a's 64-bit prime: odd, so multiplying by it is a bijection */
  uint64_t h = 0xcbf29ce484222325ULL ^ (uint64_t)n;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    memcpy(&w, p + i, 8);
    h = (h ^ w) * prime;
  }
  uint64_t tail = 0;
  memcpy(&tail, p + i, n - i);
  h = (h ^ tail) * prime;
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ULL;
  h ^= h >> 33;
  return h;
}

static napi_value checksum(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  void *data;
  size_t len;
  bool is_buffer = false;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 1 || napi_is_buffer(env, argv[0], &is_buffer) != napi_ok || !is_buffer ||
      napi_get_buffer_info(env, argv[0], &data, &len) != napi_ok) {
    napi_throw_type_error(env, NULL, "checksum64(buffer)");
    return NULL;
  }
  napi_value out;
  napi_create_bigint_uint64(env, checksum64(data, len), &out);
  return out;
}

void register_checksum(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"checksum64", NULL, checksum, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, 1, props);
}
