/*
 * A process start that costs what exec costs, for protect's two children (the
 * hold's watchdog and the reload command).
 *
 * Why not child_process.spawn: libuv forks the whole Node.js process (tens of
 * MiB of page tables copied, then thrown away by exec), and a command that must
 * run inside a network namespace needs one more program (nsenter) just to
 * setns. That was about a tenth of Node's own start-up per child on the host,
 * and far more in the kernel lab, where every page-table copy is slow. Here the
 * child shares our memory until it execs (clone with CLONE_VM|CLONE_VFORK, as
 * posix_spawn does), enters the namespace itself, and its exit is seen through
 * a pidfd watched by the event loop.
 *
 * The child, between clone and exec, only makes system calls (no malloc, no
 * locks): it runs on its own stack while this thread waits.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <node_api.h>
#include <uv.h>

#include "addon.h"

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

extern char **environ;

#define MAX_FDS 64
#define MAX_ARGS 4096
#define CHILD_STACK (64 * 1024)

typedef struct {
  const char *file;     /* as given: a path if it has a '/', else looked up in PATH */
  char *const *argv;
  const char *path_env; /* PATH, read before the clone */
  int netns_fd;         /* -1: stay in ours */
  int new_session;
  int nfds;
  int fds[MAX_FDS];     /* child fd i <- our fd fds[i] */
  sigset_t mask;        /* the caller's signal mask */
  sigset_t exec_mask;   /* the child's at exec: the caller's, plus any the caller asked to stay blocked */
  int err;              /* set by the child when it could not exec */
  const char *failed_step;
} spawn_args;

static int try_exec(spawn_args *a, const char *path) {
  execve(path, a->argv, environ);
  return errno;
}

static int child_main(void *arg) {
  spawn_args *a = arg;
  /* Handlers are ours (their code is in our memory): the child starts with defaults. */
  struct sigaction dfl;
  memset(&dfl, 0, sizeof dfl);
  dfl.sa_handler = SIG_DFL;
  for (int s = 1; s < NSIG; s++) sigaction(s, &dfl, NULL);
  if (a->new_session) setsid();
  if (a->netns_fd >= 0 && setns(a->netns_fd, CLONE_NEWNET) < 0) {
    a->err = errno;
    a->failed_step = "setns";
    _exit(127);
  }
  /* Move every wanted fd above all targets first, so placing one never clobbers another's source. */
  int tmp[MAX_FDS];
  for (int i = 0; i < a->nfds; i++) {
    tmp[i] = fcntl(a->fds[i], F_DUPFD_CLOEXEC, a->nfds);
    if (tmp[i] < 0) {
      a->err = errno;
      a->failed_step = "dup";
      _exit(127);
    }
  }
  for (int i = 0; i < a->nfds; i++) {
    if (dup2(tmp[i], i) < 0) { /* dup2 leaves the new fd without CLOEXEC: it survives exec */
      a->err = errno;
      a->failed_step = "dup2";
      _exit(127);
    }
  }
  sigprocmask(SIG_SETMASK, &a->exec_mask, NULL);
  int err = ENOENT;
  if (strchr(a->file, '/')) {
    err = try_exec(a, a->file);
  } else {
    /* execvp's search, without its allocation: EACCES remembered, ENOENT/ENOTDIR skipped. */
    char buf[4096];
    const char *p = a->path_env ? a->path_env : "/usr/local/bin:/usr/bin:/bin";
    size_t flen = strlen(a->file);
    int seen_eacces = 0;
    for (;;) {
      const char *end = strchr(p, ':');
      size_t dlen = end ? (size_t)(end - p) : strlen(p);
      if (dlen + 1 + flen + 1 <= sizeof buf) {
        size_t n = 0;
        if (dlen == 0) buf[n++] = '.';
        else {
          memcpy(buf, p, dlen);
          n = dlen;
        }
        buf[n++] = '/';
        memcpy(buf + n, a->file, flen + 1);
        /* A candidate that does not exist is skipped with access(), not a failed execve: the
         * kernel sets up a new mm before it opens the file, so each miss costs an mm built and
         * torn down (measured in the kernel lab: ~20 ms of protect's run for `true` behind six
         * PATH entries). exec still decides for any file that is there. */
        int e = access(buf, X_OK) == 0 ? try_exec(a, buf) : errno;
        if (e == EACCES) seen_eacces = 1;
        else if (e != ENOENT && e != ENOTDIR) {
          err = e;
          break;
        }
      }
      if (!end) {
        err = seen_eacces ? EACCES : ENOENT;
        break;
      }
      p = end + 1;
    }
  }
  a->err = err;
  a->failed_step = "exec";
  _exit(err == ENOENT ? 127 : 126);
}

typedef struct {
  int pidfd;
  pid_t pid;
  uv_poll_t *poll;
  napi_env env;
  napi_ref on_exit;
  napi_async_context async_ctx;
} child_watch;

static void poll_closed(uv_handle_t *h) {
  free(h);
}

/* The children being watched, so setRef can find one by pid (few at a time: a list will do). */
typedef struct watch_node {
  child_watch *w;
  struct watch_node *next;
} watch_node;
static watch_node *watches;

static void link_watch(child_watch *w) {
  watch_node *n = malloc(sizeof *n);
  if (!n) return;
  n->w = w;
  n->next = watches;
  watches = n;
}

static void unlink_watch(child_watch *w) {
  for (watch_node **pp = &watches; *pp; pp = &(*pp)->next) {
    if ((*pp)->w == w) {
      watch_node *n = *pp;
      *pp = n->next;
      free(n);
      return;
    }
  }
}

/* setChildRef(pid, ref): whether a watched child keeps the event loop alive. */
static napi_value sp_set_ref(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  int32_t pid = 0;
  bool on = true;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  napi_get_value_int32(env, argv[0], &pid);
  napi_get_value_bool(env, argv[1], &on);
  for (watch_node *n = watches; n; n = n->next) {
    if (n->w->pid != pid) continue;
    if (on) uv_ref((uv_handle_t *)n->w->poll);
    else uv_unref((uv_handle_t *)n->w->poll);
  }
  return NULL;
}

static void on_child_readable(uv_poll_t *p, int status, int events) {
  (void)status;
  (void)events;
  child_watch *w = p->data;
  siginfo_t si;
  memset(&si, 0, sizeof si);
  /* Readable means it exited: reap it (WNOHANG: never block the loop on a surprise). */
  int r = waitid(P_PIDFD, w->pidfd, &si, WEXITED | WNOHANG);
  if (r < 0 && errno == EINTR) return;
  if (r == 0 && si.si_pid == 0) return; /* not yet */
  unlink_watch(w);
  uv_poll_stop(p);
  uv_close((uv_handle_t *)p, poll_closed);
  close(w->pidfd);
  napi_env env = w->env;
  napi_handle_scope scope;
  napi_value cb, global, args[2], result;
  napi_open_handle_scope(env, &scope);
  napi_get_reference_value(env, w->on_exit, &cb);
  napi_get_global(env, &global);
  if (r < 0) { /* reaped by someone else: the status is lost */
    napi_create_int32(env, -1, &args[0]);
    napi_get_null(env, &args[1]);
  } else if (si.si_code == CLD_EXITED) {
    napi_create_int32(env, si.si_status, &args[0]);
    napi_get_null(env, &args[1]);
  } else {
    napi_get_null(env, &args[0]);
    napi_create_int32(env, si.si_status, &args[1]);
  }
  napi_make_callback(env, w->async_ctx, global, cb, 2, args, &result);
  napi_close_handle_scope(env, scope);
  napi_delete_reference(env, w->on_exit);
  napi_async_destroy(env, w->async_ctx);
  free(w);
}

static int get_string(napi_env env, napi_value v, char **out) {
  size_t len;
  if (napi_get_value_string_utf8(env, v, NULL, 0, &len) != napi_ok) return -1;
  *out = malloc(len + 1);
  if (!*out) return -1;
  napi_get_value_string_utf8(env, v, *out, len + 1, &len);
  return 0;
}

static void free_argv(char **argv, uint32_t n) {
  if (!argv) return;
  for (uint32_t i = 0; i < n; i++) free(argv[i]);
  free(argv);
}

/*
 * spawn(file, argv, fds, netnsPath | null, newSession, onExit(code, signal)[, blocked]) -> pid
 * Child fd i is our fd fds[i]; every other fd of ours is CLOEXEC (Node's are) and
 * does not reach it. `blocked` (signal numbers) stay blocked in the child across
 * exec, so that one sent before the program has set up its own handling stays
 * pending for it instead of killing it (the watchdog reads them from a signalfd). Throws with errno/syscall when the child could not start
 * (ENOENT: not found; EACCES: not executable; setns: the namespace).
 */
static napi_value sp_spawn(napi_env env, napi_callback_info info) {
  size_t argc = 7;
  napi_value argv[7], out, name;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 6) {
    napi_throw_type_error(env, NULL, "spawn(file, argv, fds, netnsPath, newSession, onExit)");
    return NULL;
  }
  spawn_args a;
  memset(&a, 0, sizeof a);
  a.netns_fd = -1;
  char *file = NULL, *netns = NULL;
  char **cargv = NULL;
  uint32_t n_args = 0;
  void *stack = NULL;
  napi_value result = NULL;
  bool is_null_ns;
  napi_valuetype t;

  if (get_string(env, argv[0], &file) < 0) goto bad;
  napi_get_array_length(env, argv[1], &n_args);
  if (n_args == 0 || n_args > MAX_ARGS) goto bad;
  cargv = calloc(n_args + 1, sizeof *cargv);
  if (!cargv) goto bad;
  for (uint32_t i = 0; i < n_args; i++) {
    napi_value el;
    napi_get_element(env, argv[1], i, &el);
    if (get_string(env, el, &cargv[i]) < 0) goto bad;
  }
  uint32_t nfds;
  napi_get_array_length(env, argv[2], &nfds);
  if (nfds > MAX_FDS) goto bad;
  a.nfds = (int)nfds;
  for (uint32_t i = 0; i < nfds; i++) {
    napi_value el;
    napi_get_element(env, argv[2], i, &el);
    if (napi_get_value_int32(env, el, &a.fds[i]) != napi_ok) goto bad;
  }
  napi_typeof(env, argv[3], &t);
  is_null_ns = t == napi_null || t == napi_undefined;
  if (!is_null_ns) {
    if (get_string(env, argv[3], &netns) < 0) goto bad;
    a.netns_fd = open(netns, O_RDONLY | O_CLOEXEC);
    if (a.netns_fd < 0) {
      throw_errno(env, "open network namespace", errno);
      goto done;
    }
  }
  bool new_session = false;
  napi_get_value_bool(env, argv[4], &new_session);
  int blocked[64];
  uint32_t n_blocked = 0;
  if (argc >= 7) {
    napi_typeof(env, argv[6], &t);
    if (t != napi_undefined && t != napi_null) {
      if (napi_get_array_length(env, argv[6], &n_blocked) != napi_ok || n_blocked > 64) goto bad;
      for (uint32_t i = 0; i < n_blocked; i++) {
        napi_value el;
        napi_get_element(env, argv[6], i, &el);
        if (napi_get_value_int32(env, el, &blocked[i]) != napi_ok || blocked[i] < 1 || blocked[i] >= NSIG) goto bad;
      }
    }
  }
  a.new_session = new_session;
  a.file = file;
  a.argv = cargv;
  a.path_env = getenv("PATH");

  stack = malloc(CHILD_STACK);
  if (!stack) {
    throw_errno(env, "spawn", ENOMEM);
    goto done;
  }
  /* No signal handler of ours may run in the child before it has reset them. */
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &a.mask);
  a.exec_mask = a.mask;
  for (uint32_t i = 0; i < n_blocked; i++) sigaddset(&a.exec_mask, blocked[i]);
  pid_t pid = clone(child_main, (char *)stack + CHILD_STACK, CLONE_VM | CLONE_VFORK | SIGCHLD, &a);
  int clone_err = errno;
  pthread_sigmask(SIG_SETMASK, &a.mask, NULL);
  if (pid < 0) {
    throw_errno(env, "clone", clone_err);
    goto done;
  }
  if (a.err) {
    /* It never ran: reap it here, and say why. */
    int st;
    waitpid(pid, &st, 0);
    throw_errno(env, a.failed_step, a.err);
    goto done;
  }
  int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
  if (pidfd < 0) {
    /* Cannot happen on the kernels synhold supports (5.3+); never leave a child unwatched. */
    int err = errno;
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    throw_errno(env, "pidfd_open", err);
    goto done;
  }
  fcntl(pidfd, F_SETFD, FD_CLOEXEC);
  child_watch *w = calloc(1, sizeof *w);
  w->poll = calloc(1, sizeof *w->poll);
  w->pidfd = pidfd;
  w->pid = pid;
  w->env = env;
  uv_loop_t *loop;
  napi_get_uv_event_loop(env, &loop);
  uv_poll_init(loop, w->poll, pidfd);
  w->poll->data = w;
  napi_create_reference(env, argv[5], 1, &w->on_exit);
  napi_create_string_utf8(env, "synhold:child", NAPI_AUTO_LENGTH, &name);
  napi_async_init(env, NULL, name, &w->async_ctx);
  uv_poll_start(w->poll, UV_READABLE, on_child_readable);
  link_watch(w);
  napi_create_int32(env, pid, &out);
  result = out;
  goto done;

bad:
  napi_throw_type_error(env, NULL, "spawn: bad arguments");
done:
  if (a.netns_fd >= 0) close(a.netns_fd);
  free(stack);
  free(file);
  free(netns);
  free_argv(cargv, n_args);
  return result;
}

/* pipe() -> [readFd, writeFd], both close-on-exec (a child gets one only through spawn's fds). */
static napi_value sp_pipe(napi_env env, napi_callback_info info) {
  (void)info;
  int p[2];
  if (pipe2(p, O_CLOEXEC) < 0) {
    throw_errno(env, "pipe", errno);
    return NULL;
  }
  napi_value arr, a, b;
  napi_create_array_with_length(env, 2, &arr);
  napi_create_int32(env, p[0], &a);
  napi_create_int32(env, p[1], &b);
  napi_set_element(env, arr, 0, a);
  napi_set_element(env, arr, 1, b);
  return arr;
}

void register_spawn(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"spawn", NULL, sp_spawn, NULL, NULL, NULL, napi_default, NULL},
      {"pipe", NULL, sp_pipe, NULL, NULL, NULL, napi_default, NULL},
      {"setChildRef", NULL, sp_set_ref, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}
