/*
 * flock(2) for JavaScript. synhold serialises holds across processes with an
 * exclusive lock on a file under /run: unlike a pid file, the kernel drops the
 * lock the instant its holder dies, even by kill -9, so a crash never leaves a
 * stale lock that blocks the next reload.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>
#include <node_api.h>

#include "addon.h"

/* tryLock(path) -> fd (>= 0) holding an exclusive lock, or -1 if another
 * process holds it. The file is created if missing. */
static napi_value try_lock(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], out;
  char path[4096];
  size_t len = 0;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 1 || napi_get_value_string_utf8(env, argv[0], path, sizeof path, &len) != napi_ok) {
    napi_throw_type_error(env, NULL, "tryLock(path)");
    return NULL;
  }
  int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) { throw_errno(env, "open lock file", errno); return NULL; }
  if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
    int err = errno;
    close(fd);
    if (err == EWOULDBLOCK) {
      napi_create_int32(env, -1, &out);
      return out;
    }
    throw_errno(env, "flock", err);
    return NULL;
  }
  napi_create_int32(env, fd, &out);
  return out;
}

/* unlock(fd): closing the descriptor drops the lock. */
static napi_value unlock(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t fd = -1;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  napi_get_value_int32(env, argv[0], &fd);
  if (fd >= 0) close(fd);
  return NULL;
}

void register_file_lock(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"tryLock", NULL, try_lock, NULL, NULL, NULL, napi_default, NULL},
      {"unlock", NULL, unlock, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}
