/*
 * reuseportSteer(pid, fd, index): on the SO_REUSEPORT group of another process's
 * listening socket (its fd `fd`), attach a classic BPF program that sends every new
 * connection to the group's socket number `index` (0: the first), or, with index -1,
 * detach the group's program. An index past the group's end makes the kernel hash as
 * if there were no program.
 *
 * Why: with `protect --stop-old` the new server listens beside the old one, and from
 * its bind on the kernel hashes new connections across both listeners; those hashed
 * to the new one wait in its queue until its start-up ends and its event loop runs
 * (tens of ms: the p99.9 tail of docs/PROTECT.md). The group's first socket is the
 * oldest listener (the kernel appends a joining socket, and moves the last one into
 * a leaving one's slot), so while the steer is on, the old server, still accepting,
 * takes every new connection until it closes; then the new listener is first.
 *
 * The socket is reached with pidfd_getfd(2) (Linux 5.6; root, or ptrace rights over
 * the process): a copy of the fd names the same socket, and a setsockopt on it acts on
 * the group. The copy is closed at once; the server's own fd is untouched.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <linux/filter.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <node_api.h>

#include "addon.h"

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_getfd
#define SYS_pidfd_getfd 438
#endif
#ifndef SO_ATTACH_REUSEPORT_CBPF
#define SO_ATTACH_REUSEPORT_CBPF 51
#endif
#ifndef SO_DETACH_REUSEPORT_BPF
#define SO_DETACH_REUSEPORT_BPF 68
#endif

static napi_value reuseport_steer(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  int32_t pid, fd, index;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 3 || napi_get_value_int32(env, argv[0], &pid) != napi_ok || napi_get_value_int32(env, argv[1], &fd) != napi_ok ||
      napi_get_value_int32(env, argv[2], &index) != napi_ok || pid <= 0 || fd < 0 || index < -1) {
    napi_throw_type_error(env, NULL, "reuseportSteer(pid, fd, index)");
    return NULL;
  }
  bool attach = index >= 0;
  int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
  if (pidfd < 0) {
    throw_errno(env, "pidfd_open", errno);
    return NULL;
  }
  int sock = (int)syscall(SYS_pidfd_getfd, pidfd, fd, 0);
  int err = errno;
  close(pidfd);
  if (sock < 0) {
    throw_errno(env, "pidfd_getfd", err);
    return NULL;
  }
  int rc;
  if (attach) {
    /* "return index": the group's socket to use. */
    struct sock_filter code[] = {BPF_STMT(BPF_RET | BPF_K, (uint32_t)index)};
    struct sock_fprog prog = {.len = 1, .filter = code};
    rc = setsockopt(sock, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &prog, sizeof prog);
  } else {
    int unused = 0;
    rc = setsockopt(sock, SOL_SOCKET, SO_DETACH_REUSEPORT_BPF, &unused, sizeof unused);
    /* ENOENT: the group has no program (already detached, or never attached): nothing to undo. */
    if (rc < 0 && errno == ENOENT) rc = 0;
  }
  err = errno;
  close(sock);
  if (rc < 0) {
    throw_errno(env, attach ? "setsockopt(SO_ATTACH_REUSEPORT_CBPF)" : "setsockopt(SO_DETACH_REUSEPORT_BPF)", err);
    return NULL;
  }
  return NULL;
}

void register_reuseport(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"reuseportSteer", NULL, reuseport_steer, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, 1, props);
}
