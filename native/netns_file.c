/*
 * readFileInNetns(nsPath, path): a /proc/thread-self/net/... file as seen from
 * another network namespace, without a process: switch this thread in, open,
 * switch back, read. (A /proc/net file shows the namespace of the thread that
 * opens it.) Replaces `nsenter --net=NS cat FILE` on the hold's path, where a
 * process spawn costs tens of milliseconds.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdlib.h>
#include <unistd.h>
#include <node_api.h>

#include "addon.h"

#define MAX_FILE (1 << 20)

static napi_value read_file_in_netns(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2], out;
  char ns_path[4096], path[4096];
  size_t len;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 2 || napi_get_value_string_utf8(env, argv[0], ns_path, sizeof ns_path, &len) != napi_ok ||
      napi_get_value_string_utf8(env, argv[1], path, sizeof path, &len) != napi_ok) {
    napi_throw_type_error(env, NULL, "readFileInNetns(nsPath, path)");
    return NULL;
  }
  int self = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (self < 0) { throw_errno(env, "open own netns", errno); return NULL; }
  int target = open(ns_path, O_RDONLY | O_CLOEXEC);
  if (target < 0) { int e = errno; close(self); throw_errno(env, "open netns", e); return NULL; }
  if (setns(target, CLONE_NEWNET) < 0) { int e = errno; close(self); close(target); throw_errno(env, "setns", e); return NULL; }
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  int open_err = errno;
  /* Returning to our own namespace cannot fail for a thread that left it. */
  setns(self, CLONE_NEWNET);
  close(self);
  close(target);
  if (fd < 0) { throw_errno(env, "open", open_err); return NULL; }
  char *buf = malloc(MAX_FILE);
  if (!buf) { close(fd); throw_errno(env, "malloc", ENOMEM); return NULL; }
  size_t n = 0;
  for (;;) {
    ssize_t r = read(fd, buf + n, MAX_FILE - n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    n += (size_t)r;
    if (n == MAX_FILE) break;
  }
  close(fd);
  napi_create_string_utf8(env, buf, n, &out);
  free(buf);
  return out;
}

void register_netns_file(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"readFileInNetns", NULL, read_file_in_netns, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, 1, props);
}
