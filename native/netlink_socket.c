/*
 * The only code in synhold that touches a netlink file descriptor (and, with the
 * same handle and readiness machinery, protect's unix stream connection to the
 * daemon: see connectUnix below).
 *
 * Node has no AF_NETLINK socket, so this addon gives JavaScript the five things
 * it needs and nothing more: open (optionally inside another network namespace),
 * send, non-blocking receive, readiness callbacks on the libuv loop, and close.
 * Framing, sequence numbers and decoding all live in TypeScript (src/netlink/).
 *
 * Readiness uses uv_poll on the event loop thread rather than a blocking recv()
 * on a worker thread: a parked worker would keep the process from exiting
 * (KERNEL.md measured this with koffi's async mode). The poll handle is unref'd
 * unless JavaScript says a reply is outstanding, so an idle socket never keeps
 * the process alive.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>
#include <linux/netlink.h>
#include <node_api.h>
#include <uv.h>

#include "addon.h"

#ifndef NETLINK_EXT_ACK
#define NETLINK_EXT_ACK 11
#endif
#ifndef NETLINK_CAP_ACK
#define NETLINK_CAP_ACK 10
#endif
#ifndef SOL_NETLINK
#define SOL_NETLINK 270
#endif

/* Large enough for any dump part the kernel builds (it caps parts at 32 KiB
 * unless the receive buffer is larger) and for NFQUEUE packets copied with a
 * small copy range. A datagram larger than this is reported, never cut silently. */
#define RECV_SCRATCH (256 * 1024)

typedef struct {
  int fd;
  uint32_t port_id;
  int polling;
  int closed;
  uv_poll_t *poll; /* allocated separately: freed in uv_close's callback */
  napi_env env;
  napi_ref on_readable;
  napi_async_context async_ctx;
  unsigned char *scratch;
} nl_socket;

static void poll_closed(uv_handle_t *h) { free(h); }

static void socket_release(napi_env env, nl_socket *s) {
  if (s->closed) return;
  s->closed = 1;
  if (s->poll) {
    uv_poll_stop(s->poll);
    uv_close((uv_handle_t *)s->poll, poll_closed);
    s->poll = NULL;
  }
  if (s->on_readable) {
    napi_delete_reference(env, s->on_readable);
    s->on_readable = NULL;
  }
  if (s->async_ctx) {
    napi_async_destroy(env, s->async_ctx);
    s->async_ctx = NULL;
  }
  if (s->fd >= 0) {
    close(s->fd);
    s->fd = -1;
  }
  free(s->scratch);
  s->scratch = NULL;
}

static void socket_finalize(napi_env env, void *data, void *hint) {
  (void)hint;
  nl_socket *s = data;
  socket_release(env, s);
  free(s);
}

static nl_socket *unwrap(napi_env env, napi_value v) {
  nl_socket *s = NULL;
  if (napi_unwrap(env, v, (void **)&s) != napi_ok || s == NULL) {
    napi_throw_type_error(env, NULL, "not a netlink socket handle");
    return NULL;
  }
  if (s->closed) {
    throw_errno(env, "netlink socket", EBADF);
    return NULL;
  }
  return s;
}

/* Create the socket in the namespace named by ns_path: setns() moves only the
 * calling thread, and a socket belongs for life to the namespace it was created
 * in, so switching, creating and switching back gives a handle bound to that
 * namespace without moving the rest of the process. */
static int open_in_netns(const char *ns_path, int protocol, int *err) {
  int self = -1, target = -1, fd = -1;
  if (ns_path) {
    self = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (self < 0) { *err = errno; return -1; }
    target = open(ns_path, O_RDONLY | O_CLOEXEC);
    if (target < 0) { *err = errno; close(self); return -1; }
    if (setns(target, CLONE_NEWNET) < 0) {
      *err = errno; close(self); close(target); return -1;
    }
  }
  fd = socket(AF_NETLINK, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, protocol);
  if (fd < 0) *err = errno;
  if (ns_path) {
    /* Returning to our own namespace cannot fail for a thread that left it. */
    if (setns(self, CLONE_NEWNET) < 0 && fd >= 0) {
      *err = errno; close(fd); fd = -1;
    }
    close(self);
    close(target);
  }
  return fd;
}

/* The JavaScript handle of an open socket fd (netlink, or protect's unix stream to
 * the daemon): { fd, portId } wrapping the state that watch/recv/close use. Takes
 * the fd: closes it if the handle cannot be made. */
static napi_value wrap_socket(napi_env env, int fd, uint32_t port_id, const char *what) {
  napi_value handle, v;
  nl_socket *s = calloc(1, sizeof *s);
  if (!s || !(s->scratch = malloc(RECV_SCRATCH))) {
    if (s) free(s);
    close(fd);
    throw_errno(env, what, ENOMEM);
    return NULL;
  }
  s->fd = fd;
  s->port_id = port_id;
  s->env = env;
  napi_create_object(env, &handle);
  napi_wrap(env, handle, s, socket_finalize, NULL, NULL);
  napi_create_uint32(env, port_id, &v);
  napi_set_named_property(env, handle, "portId", v);
  napi_create_int32(env, fd, &v);
  napi_set_named_property(env, handle, "fd", v);
  return handle;
}

/* open(protocol: number, netnsPath: string | null, rcvbuf: number) -> handle */
static napi_value nl_open(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  int32_t protocol = 0, rcvbuf = 0;
  char ns_path[4096];
  const char *ns = NULL;
  napi_valuetype t;
  int err = 0, one = 1;

  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 3 || napi_get_value_int32(env, argv[0], &protocol) != napi_ok) {
    napi_throw_type_error(env, NULL, "open(protocol, netnsPath, rcvbuf)");
    return NULL;
  }
  napi_typeof(env, argv[1], &t);
  if (t == napi_string) {
    size_t len = 0;
    napi_get_value_string_utf8(env, argv[1], ns_path, sizeof ns_path, &len);
    if (len >= sizeof ns_path - 1) { throw_errno(env, "netns path", ENAMETOOLONG); return NULL; }
    ns = ns_path;
  }
  napi_get_value_int32(env, argv[2], &rcvbuf);

  int fd = open_in_netns(ns, protocol, &err);
  if (fd < 0) { throw_errno(env, ns ? "open netlink socket in namespace" : "open netlink socket", err); return NULL; }

  /* EXT_ACK makes the kernel attach its error text and offset; CAP_ACK keeps it
   * from echoing our whole request back in every error. Both are best effort:
   * kernels before 4.12 lack EXT_ACK and still work, without the text. */
  setsockopt(fd, SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof one);
  setsockopt(fd, SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof one);
  if (rcvbuf > 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);

  struct sockaddr_nl local = {.nl_family = AF_NETLINK};
  socklen_t sl = sizeof local;
  if (bind(fd, (struct sockaddr *)&local, sizeof local) < 0 ||
      getsockname(fd, (struct sockaddr *)&local, &sl) < 0) {
    err = errno; close(fd);
    throw_errno(env, "bind netlink socket", err);
    return NULL;
  }

  return wrap_socket(env, fd, local.nl_pid, "open netlink socket");
}

/* The (handle, buffer) arguments of send and streamSend; NULL with an exception pending if they are not. */
static nl_socket *socket_and_buffer(napi_env env, napi_callback_info info, const char *usage, void **data, size_t *len) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  nl_socket *s = unwrap(env, argv[0]);
  if (!s) return NULL;
  if (argc < 2 || napi_get_buffer_info(env, argv[1], data, len) != napi_ok) {
    napi_throw_type_error(env, NULL, usage);
    return NULL;
  }
  return s;
}

/* send(handle, buffer) -> bytes sent. Netlink sends are atomic per datagram. */
static napi_value nl_send(napi_env env, napi_callback_info info) {
  napi_value out;
  void *data;
  size_t len;
  nl_socket *s = socket_and_buffer(env, info, "send(handle, buffer)", &data, &len);
  if (!s) return NULL;
  struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
  ssize_t n;
  do {
    n = sendto(s->fd, data, len, 0, (struct sockaddr *)&kernel, sizeof kernel);
  } while (n < 0 && errno == EINTR);
  if (n < 0) { throw_errno(env, "netlink send", errno); return NULL; }
  napi_create_int64(env, n, &out);
  return out;
}

/* recv(handle) -> Buffer, or null when nothing is waiting (EAGAIN). */
static napi_value nl_recv(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], out;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  nl_socket *s = unwrap(env, argv[0]);
  if (!s) return NULL;
  struct sockaddr_nl from;
  struct iovec iov = {.iov_base = s->scratch, .iov_len = RECV_SCRATCH};
  struct msghdr mh = {.msg_name = &from, .msg_namelen = sizeof from, .msg_iov = &iov, .msg_iovlen = 1};
  ssize_t n;
  do {
    n = recvmsg(s->fd, &mh, MSG_TRUNC);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      napi_get_null(env, &out);
      return out;
    }
    throw_errno(env, "netlink recv", errno); /* ENOBUFS: the kernel dropped messages for us */
    return NULL;
  }
  if ((size_t)n > RECV_SCRATCH || (mh.msg_flags & MSG_TRUNC)) {
    throw_errno(env, "netlink recv (datagram larger than receive buffer)", EMSGSIZE);
    return NULL;
  }
  void *copy;
  napi_create_buffer_copy(env, (size_t)n, s->scratch, &copy, &out);
  return out;
}

static void on_poll(uv_poll_t *p, int status, int events) {
  (void)events;
  nl_socket *s = p->data;
  if (!s || s->closed || !s->on_readable) return;
  napi_env env = s->env;
  napi_handle_scope scope;
  napi_value cb, global, arg, result;
  napi_open_handle_scope(env, &scope);
  napi_get_reference_value(env, s->on_readable, &cb);
  napi_get_global(env, &global);
  napi_create_int32(env, status, &arg);
  /* make_callback drains the microtask queue afterwards, so promise
   * continuations of a completed request run before the next poll. */
  napi_make_callback(env, s->async_ctx, global, cb, 1, &arg, &result);
  napi_close_handle_scope(env, scope);
}

/* watch(handle, onReadable(status)) -- start readiness callbacks (unref'd). */
static napi_value nl_watch(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2], name;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  nl_socket *s = unwrap(env, argv[0]);
  if (!s) return NULL;
  if (s->polling) { napi_throw_error(env, NULL, "socket already watched"); return NULL; }
  uv_loop_t *loop;
  napi_get_uv_event_loop(env, &loop);
  s->poll = calloc(1, sizeof *s->poll);
  if (!s->poll) { throw_errno(env, "watch", ENOMEM); return NULL; }
  int rc = uv_poll_init(loop, s->poll, s->fd);
  if (rc != 0) { free(s->poll); s->poll = NULL; throw_errno(env, "uv_poll_init", -rc); return NULL; }
  s->poll->data = s;
  napi_create_reference(env, argv[1], 1, &s->on_readable);
  napi_create_string_utf8(env, "synhold:netlink", NAPI_AUTO_LENGTH, &name);
  napi_async_init(env, argv[0], name, &s->async_ctx);
  uv_poll_start(s->poll, UV_READABLE, on_poll);
  uv_unref((uv_handle_t *)s->poll);
  s->polling = 1;
  return NULL;
}

/* setRef(handle, bool): keep the loop alive only while a reply is awaited. */
static napi_value nl_set_ref(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  bool on = false;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  nl_socket *s = unwrap(env, argv[0]);
  if (!s) return NULL;
  napi_get_value_bool(env, argv[1], &on);
  if (s->poll) {
    if (on) uv_ref((uv_handle_t *)s->poll);
    else uv_unref((uv_handle_t *)s->poll);
  }
  return NULL;
}

/* setsockopt(handle, level, name, int value) for group membership and the like. */
static napi_value nl_setsockopt(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  int32_t level, name, value;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  nl_socket *s = unwrap(env, argv[0]);
  if (!s) return NULL;
  if (argc < 4 || napi_get_value_int32(env, argv[1], &level) != napi_ok ||
      napi_get_value_int32(env, argv[2], &name) != napi_ok ||
      napi_get_value_int32(env, argv[3], &value) != napi_ok) {
    napi_throw_type_error(env, NULL, "setsockopt(handle, level, name, value)");
    return NULL;
  }
  if (setsockopt(s->fd, level, name, &value, sizeof value) < 0) {
    throw_errno(env, "setsockopt", errno);
  }
  return NULL;
}

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif

/* netnsCookie(netnsPath | null) -> decimal string, or null if the kernel has no
 * SO_NETNS_COOKIE (before 5.14). Unlike a namespace's inode number, which the
 * kernel reuses once the namespace is gone, the cookie is never reused: state
 * keyed by it cannot be mistaken for a dead namespace's. */
static napi_value nl_netns_cookie(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], out;
  char ns_path[4096];
  const char *ns = NULL;
  napi_valuetype t;
  int err = 0;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc >= 1) {
    napi_typeof(env, argv[0], &t);
    if (t == napi_string) {
      size_t len = 0;
      napi_get_value_string_utf8(env, argv[0], ns_path, sizeof ns_path, &len);
      ns = ns_path;
    }
  }
  int fd = open_in_netns(ns, NETLINK_ROUTE, &err);
  if (fd < 0) { throw_errno(env, "netns cookie", err); return NULL; }
  uint64_t cookie = 0;
  socklen_t len = sizeof cookie;
  int rc = getsockopt(fd, SOL_SOCKET, SO_NETNS_COOKIE, &cookie, &len);
  err = errno;
  close(fd);
  if (rc < 0) {
    if (err == ENOPROTOOPT) { napi_get_null(env, &out); return out; }
    throw_errno(env, "getsockopt(SO_NETNS_COOKIE)", err);
    return NULL;
  }
  char buf[32];
  snprintf(buf, sizeof buf, "%llu", (unsigned long long)cookie);
  napi_create_string_utf8(env, buf, NAPI_AUTO_LENGTH, &out);
  return out;
}

static napi_value nl_close(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  nl_socket *s = NULL;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (napi_unwrap(env, argv[0], (void **)&s) == napi_ok && s) socket_release(env, s);
  return NULL;
}

/* connectUnix(path, timeoutMs) -> handle, or null when nobody listens there
 * (ENOENT, ECONNREFUSED, or the connect did not complete within timeoutMs).
 *
 * protect reaches the daemon through this instead of node:net, whose loading
 * alone was 20-37 ms of protect's run in the kernel lab (docs/PROTECT-COST.md).
 * The connect blocks (a unix connect waits only while the listener's backlog is
 * full, bounded by SO_SNDTIMEO); afterwards the socket is non-blocking and uses
 * watch/setRef/close like a netlink socket, with streamSend/streamRecv. */
static napi_value nl_connect_unix(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2], out;
  char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
  size_t len = 0;
  int32_t timeout_ms = 0;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 2 || napi_get_value_string_utf8(env, argv[0], path, sizeof path, &len) != napi_ok ||
      napi_get_value_int32(env, argv[1], &timeout_ms) != napi_ok) {
    napi_throw_type_error(env, NULL, "connectUnix(path, timeoutMs)");
    return NULL;
  }
  if (len >= sizeof path - 1) { throw_errno(env, "unix socket path", ENAMETOOLONG); return NULL; }
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) { throw_errno(env, "unix socket", errno); return NULL; }
  struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  memcpy(addr.sun_path, path, len + 1);
  int rc;
  do {
    rc = connect(fd, (struct sockaddr *)&addr, sizeof addr);
  } while (rc < 0 && errno == EINTR);
  if (rc < 0) {
    int err = errno;
    close(fd);
    if (err == ENOENT || err == ECONNREFUSED || err == EAGAIN || err == EWOULDBLOCK || err == ETIMEDOUT) {
      napi_get_null(env, &out);
      return out;
    }
    throw_errno(env, "connect unix socket", err);
    return NULL;
  }
  struct timeval none = {0, 0};
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &none, sizeof none);
  if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0) {
    int err = errno;
    close(fd);
    throw_errno(env, "unix socket O_NONBLOCK", err);
    return NULL;
  }
  return wrap_socket(env, fd, 0, "connect unix socket");
}

/* streamSend(handle, buffer) -> bytes sent: all of it, or throws (EAGAIN: the
 * peer is not reading; EPIPE: it is gone). Messages are a few hundred bytes,
 * far below a unix socket's buffer, so a short send means a stuck peer. */
static napi_value nl_stream_send(napi_env env, napi_callback_info info) {
  napi_value out;
  void *data;
  size_t len;
  nl_socket *s = socket_and_buffer(env, info, "streamSend(handle, buffer)", &data, &len);
  if (!s) return NULL;
  ssize_t n;
  do {
    n = send(s->fd, data, len, MSG_NOSIGNAL | MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  if (n < 0) { throw_errno(env, "unix socket send", errno); return NULL; }
  if ((size_t)n < len) { throw_errno(env, "unix socket send (short)", EAGAIN); return NULL; }
  napi_create_int64(env, n, &out);
  return out;
}

/* streamRecv(handle) -> Buffer with what has arrived, an empty Buffer at end
 * of stream (or a reset), or null when nothing is waiting. */
static napi_value nl_stream_recv(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], out;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  nl_socket *s = unwrap(env, argv[0]);
  if (!s) return NULL;
  ssize_t n;
  do {
    n = recv(s->fd, s->scratch, RECV_SCRATCH, MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      napi_get_null(env, &out);
      return out;
    }
    if (errno != ECONNRESET) { throw_errno(env, "unix socket recv", errno); return NULL; }
    n = 0;
  }
  void *copy;
  napi_create_buffer_copy(env, (size_t)n, s->scratch, &copy, &out);
  return out;
}

void register_netlink_socket(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"open", NULL, nl_open, NULL, NULL, NULL, napi_default, NULL},
      {"send", NULL, nl_send, NULL, NULL, NULL, napi_default, NULL},
      {"recv", NULL, nl_recv, NULL, NULL, NULL, napi_default, NULL},
      {"watch", NULL, nl_watch, NULL, NULL, NULL, napi_default, NULL},
      {"setRef", NULL, nl_set_ref, NULL, NULL, NULL, napi_default, NULL},
      {"setsockopt", NULL, nl_setsockopt, NULL, NULL, NULL, napi_default, NULL},
      {"close", NULL, nl_close, NULL, NULL, NULL, napi_default, NULL},
      {"netnsCookie", NULL, nl_netns_cookie, NULL, NULL, NULL, napi_default, NULL},
      {"connectUnix", NULL, nl_connect_unix, NULL, NULL, NULL, napi_default, NULL},
      {"streamSend", NULL, nl_stream_send, NULL, NULL, NULL, napi_default, NULL},
      {"streamRecv", NULL, nl_stream_recv, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}
