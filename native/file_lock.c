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
#include <sys/stat.h>
#include <unistd.h>
#include <node_api.h>

#include "addon.h"

/* The one string argument (a path) of tryLock and isLocked; 0 with an exception pending if it is not. */
static int path_arg(napi_env env, napi_callback_info info, char *path, size_t size, const char *usage) {
  size_t argc = 1, len = 0;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 1 || napi_get_value_string_utf8(env, argv[0], path, size, &len) != napi_ok) {
    napi_throw_type_error(env, NULL, usage);
    return 0;
  }
  return 1;
}

/* tryLock(path) -> fd (>= 0) holding an exclusive lock, or -1 if another
 * process holds it. The file is created if missing. */
static napi_value try_lock(napi_env env, napi_callback_info info) {
  napi_value out;
  char path[4096];
  if (!path_arg(env, info, path, sizeof path, "tryLock(path)")) return NULL;
  /* teardown removes the lock file while it holds the lock, and setup makes a new
   * one. A lock taken on a file opened before that removal would be a lock on a
   * dead inode that nobody else looks at: two holders at once. So after flock,
   * the path must still name the locked file; if not, try again with the new one. */
  for (int attempt = 0; attempt < 100; attempt++) {
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
    struct stat held, named;
    if (fstat(fd, &held) < 0) {
      int err = errno;
      close(fd);
      throw_errno(env, "fstat lock file", err);
      return NULL;
    }
    if (stat(path, &named) == 0 && named.st_dev == held.st_dev && named.st_ino == held.st_ino) {
      napi_create_int32(env, fd, &out);
      return out;
    }
    /* Replaced or removed meanwhile: start over (open fails with ENOENT if the directory went too). */
    close(fd);
  }
  throw_errno(env, "lock file kept being replaced", EAGAIN);
  return NULL;
}

/* isLocked(path) -> whether some process holds the lock (false if there is no file).
 *
 * Asked of the kernel by a shared, non-blocking flock on a read-only descriptor
 * of our own, dropped at once: /proc/locks cannot answer it everywhere. It names
 * a flock by the pid that took it, and in a PID namespace other than the
 * initial one (a container, a pod) it leaves out every lock whose taker is not
 * visible there, dead takers included: a manual hold's lock, taken by `synhold
 * plug` and kept by its watchdog after plug exits, was invisible to `status`
 * there (a bare CI run, which lives in a PID namespace of its own). The probe
 * holds a shared lock for a few microseconds; a hold taking the lock in that
 * instant finds it busy and tries again, as it does behind any holder. */
static napi_value is_locked(napi_env env, napi_callback_info info) {
  napi_value out;
  char path[4096];
  if (!path_arg(env, info, path, sizeof path, "isLocked(path)")) return NULL;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) { napi_get_boolean(env, false, &out); return out; }
    throw_errno(env, "open lock file", errno);
    return NULL;
  }
  int rc = flock(fd, LOCK_SH | LOCK_NB);
  int err = errno;
  close(fd);
  if (rc < 0 && err != EWOULDBLOCK) { throw_errno(env, "flock", err); return NULL; }
  napi_get_boolean(env, rc < 0, &out);
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
      {"isLocked", NULL, is_locked, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}
