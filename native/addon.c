/* Module entry: registers each source file's functions (netlink sockets, file lock,
 * netns file, spawn, scheduling, checksum, reuseport steer). */
#include <string.h>
#include <node_api.h>

#include "addon.h"

void throw_errno(napi_env env, const char *what, int err) {
  napi_value msg, error, num, sys;
  const char *text = strerror(err);
  char buf[512];
  size_t n = strlen(what);
  if (n > 256) n = 256;
  memcpy(buf, what, n);
  buf[n] = 0;
  strcat(buf, ": ");
  strncat(buf, text, sizeof buf - strlen(buf) - 1);
  napi_create_string_utf8(env, buf, NAPI_AUTO_LENGTH, &msg);
  napi_create_error(env, NULL, msg, &error);
  napi_create_int32(env, err, &num);
  napi_set_named_property(env, error, "errno", num);
  napi_create_string_utf8(env, what, NAPI_AUTO_LENGTH, &sys);
  napi_set_named_property(env, error, "syscall", sys);
  napi_throw(env, error);
}

static napi_value init(napi_env env, napi_value exports) {
  register_netlink_socket(env, exports);
  register_file_lock(env, exports);
  register_netns_file(env, exports);
  register_spawn(env, exports);
  register_sched(env, exports);
  register_checksum(env, exports);
  register_reuseport(env, exports);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
