/*
 * synhold-watchdog: the dead-man's switch of one hold.
 *
 * Whoever holds (protect, the daemon, a manual `synhold plug`) starts this
 * process before it turns the kernel hold on, and hands it everything needed to
 * end that hold: the netlink socket(s) and the release messages, encoded in
 * advance. The watchdog knows nothing else; it only waits, and sends them when
 *   - its owner dies (EOF on the owner pipe: the kernel closes it even on kill -9),
 *   - a watched process exits (--watch-pid: the daemon's client, via pidfd),
 *   - the max-hold deadline passes (CLOCK_MONOTONIC, whatever the owner does:
 *     a SIGSTOPped owner cannot keep traffic held),
 *   - it gets SIGTERM, SIGINT or SIGHUP (how `synhold release` ends a hold), or
 *     SIGUSR1 (a safety net past max-hold: recorded as max-hold, not as a release by hand).
 * It is not a Node.js process, so it costs ~1 ms to start instead of a second
 * runtime start per reload, and it holds no JavaScript heap.
 *
 * It also keeps a duplicate of the hold lock's fd (--lock-fd): flock(2) belongs
 * to the open file, so the lock stays taken until both the owner and the
 * watchdog are gone. A watchdog releasing late can then never cut the next
 * hold short: the next hold cannot start before this process exits.
 *
 * The owner pipe carries records, each one atomic write:
 *   'B'  the owner begins its own release: stand down from the deadline and
 *        signals (two releasers on one nfqueue socket would take each other's
 *        acknowledgements), but still finish the release if the owner dies now,
 *        or has not said 'X' half a second after max-hold (stopped mid-release);
 *   'X'  the owner released and recorded it: exit 0 without sending anything;
 *   'T'  the owner's own release failed: release now (as if the owner were
 *        gone), the pipe left open for 'A';
 *   'A' seq(u32 BE) error(i32 BE)
 *        an acknowledgement of one of our requests that the owner read. A socket
 *        we share with a living owner is one receive queue for two readers, and
 *        the kernel gives each reply to whichever reads first: without this, an
 *        owner reading its nfqueue socket took every ack of a max-hold release
 *        (CI: "release message 1 failed: Connection timed out").
 *
 * A backend whose release is not a netlink request (drop: an iptables flush)
 * gives a command to run instead (--run).
 *
 * Exit status: 0 stood down; 10 owner gone, 11 max-hold, 12 signal, 13 watched
 * process exited (released in each case); 20 a release message failed after
 * retries; 2 bad usage. One line on stderr says what it did.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/netlink.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_MESSAGES 16
#define MAX_MESSAGE 512
#define ACK_TIMEOUT_MS 250
#define ATTEMPTS 3
#define MAX_COMMANDS 4
#define MAX_ARGS 32
#define COMMAND_TIMEOUT_MS 5000

enum cause { OWNER_GONE = 10, MAX_HOLD = 11, SIGNALLED = 12, WATCHED_EXITED = 13 };

struct message {
  int fd;
  size_t len;
  unsigned char data[MAX_MESSAGE];
};

static struct message messages[MAX_MESSAGES];
static int n_messages;
static char *commands[MAX_COMMANDS][MAX_ARGS + 1];
static int n_commands;
static const char *record_path;
static const char *journal_path;
/* The owner pipe while a living owner may relay acks (-1: none, or EOF seen). */
static int owner_pipe = -1;
/* Bytes read from the owner pipe and not yet parsed (a record may span two reads). */
static unsigned char pipe_buf[512];
static size_t pipe_len;

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t epoch_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/*
 * "FD:HEX" -> one message: one datagram of whole nlmsghdr-framed requests. Most
 * are one request; an nf_tables transaction is several (BATCH_BEGIN, the change,
 * BATCH_END), which the kernel takes only in one datagram. The ack waited for is
 * the one answering the first header's sequence number, so a transaction gives
 * every header that number.
 */
static int parse_message(const char *arg) {
  if (n_messages >= MAX_MESSAGES) return -1;
  char *end;
  long fd = strtol(arg, &end, 10);
  if (*end != ':' || fd < 0) return -1;
  const char *hex = end + 1;
  size_t hl = strlen(hex);
  if (hl % 2 || hl / 2 > MAX_MESSAGE || hl / 2 < sizeof(struct nlmsghdr)) return -1;
  struct message *m = &messages[n_messages];
  for (size_t i = 0; i < hl / 2; i++) {
    int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return -1;
    m->data[i] = (unsigned char)(hi << 4 | lo);
  }
  m->fd = (int)fd;
  m->len = hl / 2;
  /* The headers must tile the datagram exactly. */
  size_t off = 0;
  while (off < m->len) {
    if (m->len - off < sizeof(struct nlmsghdr)) return -1;
    const struct nlmsghdr *h = (const struct nlmsghdr *)(m->data + off);
    if (h->nlmsg_len < sizeof(struct nlmsghdr) || h->nlmsg_len > m->len - off) return -1;
    off += NLMSG_ALIGN(h->nlmsg_len);
  }
  if (off != m->len) return -1;
  n_messages++;
  return 0;
}

static uint32_t be32(const unsigned char *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/*
 * Reads what the owner pipe has and parses whole records. Returns 1 with *error
 * set when a relayed ack answers `seq`, else 0. During a release 'B', 'X' and
 * 'T' change nothing: the release goes on. EOF: the owner is gone, stop reading.
 */
static int read_relayed(uint32_t seq, int *error) {
  ssize_t n = read(owner_pipe, pipe_buf + pipe_len, sizeof pipe_buf - pipe_len);
  if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN)) {
    owner_pipe = -1;
    return 0;
  }
  if (n > 0) pipe_len += (size_t)n;
  int found = 0;
  size_t i = 0;
  while (i < pipe_len) {
    if (pipe_buf[i] != 'A') {
      i++;
      continue;
    }
    if (pipe_len - i < 9) break;
    if (be32(pipe_buf + i + 1) == seq) {
      *error = (int32_t)be32(pipe_buf + i + 5);
      found = 1;
    }
    i += 9;
  }
  memmove(pipe_buf, pipe_buf + i, pipe_len - i);
  pipe_len -= i;
  return found;
}

/*
 * Sends one request and waits for its acknowledgement, skipping anything else
 * on the socket (an nfqueue socket also carries the held packets' messages,
 * which a dead owner never read). Returns 0, or the errno the kernel answered.
 */
static int send_once(const struct message *m) {
  const struct nlmsghdr *req = (const struct nlmsghdr *)m->data;
  /* Drop what is already queued on the socket: it cannot be an answer to this request. */
  unsigned char buf[65536];
  while (recv(m->fd, buf, sizeof buf, MSG_DONTWAIT) > 0) {
  }
  if (send(m->fd, m->data, m->len, 0) < 0) return errno;
  int64_t deadline = now_ms() + ACK_TIMEOUT_MS;
  for (;;) {
    int64_t left = deadline - now_ms();
    if (left <= 0) return ETIMEDOUT;
    struct pollfd p[2] = {{.fd = m->fd, .events = POLLIN}, {.fd = owner_pipe, .events = POLLIN}};
    int r = poll(p, owner_pipe >= 0 ? 2 : 1, (int)left);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) continue;
    if (owner_pipe >= 0 && p[1].revents) {
      int error = 0;
      if (read_relayed(req->nlmsg_seq, &error)) return error < 0 ? -error : 0;
    }
    if (!p[0].revents) continue;
    ssize_t n = recv(m->fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      if (errno == ENOBUFS) continue; /* overrun of packet messages; the ack may still come */
      return errno;
    }
    for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, (size_t)n); h = NLMSG_NEXT(h, n)) {
      if (h->nlmsg_type != NLMSG_ERROR || h->nlmsg_seq != req->nlmsg_seq) continue;
      const struct nlmsgerr *e = (const struct nlmsgerr *)NLMSG_DATA(h);
      return e->error < 0 ? -e->error : 0;
    }
  }
}

/* "ARG\x1fARG..." -> one command. */
static int parse_command(char *arg) {
  if (n_commands >= MAX_COMMANDS) return -1;
  int n = 0;
  for (char *tok = strtok(arg, "\x1f"); tok; tok = strtok(NULL, "\x1f")) {
    if (n >= MAX_ARGS) return -1;
    commands[n_commands][n++] = tok;
  }
  if (n == 0) return -1;
  commands[n_commands][n] = NULL;
  n_commands++;
  return 0;
}

/* Runs a release command (the drop backend's iptables flush), bounded; returns its exit status or -1. */
static int run_command(char **argv) {
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    int devnull = open("/dev/null", O_RDWR);
    if (devnull >= 0) {
      dup2(devnull, 0);
      dup2(devnull, 1);
    }
    execvp(argv[0], argv);
    _exit(127);
  }
  int64_t deadline = now_ms() + COMMAND_TIMEOUT_MS;
  for (;;) {
    int status;
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    if (r < 0) return -1;
    if (now_ms() >= deadline) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      return -1;
    }
    struct timespec ts = {0, 2000000};
    nanosleep(&ts, NULL);
  }
}

/*
 * Sends every release message in order. ENOENT (nothing queued, no such table)
 * and ENODEV (no such queue: its owner unbound it) mean nothing was left to
 * release there: done.
 */
static int release_all(void) {
  int failed = 0;
  for (int i = 0; i < n_messages; i++) {
    int err = 0;
    for (int a = 0; a < ATTEMPTS; a++) {
      err = send_once(&messages[i]);
      if (err == 0 || err == ENOENT || err == ENODEV) break;
    }
    if (err && err != ENOENT && err != ENODEV) {
      fprintf(stderr, "synhold-watchdog: release message %d failed: %s\n", i + 1, strerror(err));
      failed = 1;
    }
  }
  for (int i = 0; i < n_commands; i++) {
    int st = run_command(commands[i]);
    if (st != 0) {
      fprintf(stderr, "synhold-watchdog: release command %s failed (%d)\n", commands[i][0], st);
      failed = 1;
    }
  }
  return failed;
}

static const char *cause_name(enum cause c) {
  switch (c) {
    case OWNER_GONE: return "owner-gone";
    case MAX_HOLD: return "max-hold";
    case SIGNALLED: return "signal";
    case WATCHED_EXITED: return "watched-exited";
  }
  return "?";
}

static int finish(enum cause c, int64_t started) {
  int failed = release_all();
  int64_t took = now_ms() - started;
  if (!failed) {
    /* The hold is over: its record goes (the lock, still ours, keeps anyone from writing a new one). */
    if (record_path) unlink(record_path);
    if (journal_path) {
      int fd = open(journal_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
      if (fd >= 0) {
        char line[128];
        int n = snprintf(line, sizeof line, "%lld %s %lld\n", (long long)epoch_ms(), cause_name(c), (long long)took);
        if (write(fd, line, (size_t)n) < 0) {
          /* best effort: the release itself happened */
        }
        close(fd);
      }
    }
  }
  fprintf(stderr, "synhold-watchdog: released (%s) after %lld ms%s\n", cause_name(c), (long long)took, failed ? ", with errors" : "");
  return failed ? 20 : (int)c;
}

static void usage(void) {
  fprintf(stderr,
          "usage: synhold-watchdog --deadline-ms N (--owner-fd K | --no-owner) [--watch-pid P] [--lock-fd K]\n"
          "                        [--record PATH] [--journal PATH] (--send FD:HEX | --run ARGV)...\n"
          "  ARGV: the words of a command separated by 0x1f\n");
  exit(2);
}

int main(int argc, char **argv) {
  int64_t started = now_ms();
  long deadline_ms = -1;
  int owner_fd = -1, no_owner = 0;
  long watch_pid = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--no-owner")) {
      no_owner = 1;
      continue;
    }
    if (!v) usage();
    i++;
    if (!strcmp(a, "--deadline-ms")) deadline_ms = strtol(v, NULL, 10);
    else if (!strcmp(a, "--owner-fd")) owner_fd = (int)strtol(v, NULL, 10);
    else if (!strcmp(a, "--watch-pid")) watch_pid = strtol(v, NULL, 10);
    else if (!strcmp(a, "--lock-fd")) (void)v; /* kept open: nothing else to do with it */
    else if (!strcmp(a, "--record")) record_path = v;
    else if (!strcmp(a, "--journal")) journal_path = v;
    else if (!strcmp(a, "--send")) {
      if (parse_message(v)) usage();
    } else if (!strcmp(a, "--run")) {
      if (parse_command(argv[i])) usage();
    } else usage();
  }
  if (deadline_ms < 0 || (owner_fd < 0 && !no_owner) || n_messages + n_commands == 0) usage();

  owner_pipe = owner_fd;
  signal(SIGPIPE, SIG_IGN);
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGHUP);
  sigaddset(&mask, SIGUSR1);
  sigprocmask(SIG_BLOCK, &mask, NULL);
  int sfd = signalfd(-1, &mask, SFD_CLOEXEC);
  if (sfd < 0) {
    perror("synhold-watchdog: signalfd");
    return finish(SIGNALLED, started);
  }
  int pidfd = -1;
  if (watch_pid > 0) {
    pidfd = (int)syscall(SYS_pidfd_open, (pid_t)watch_pid, 0);
    /* Already gone: that is the event we wait for. */
    if (pidfd < 0 && errno == ESRCH) return finish(WATCHED_EXITED, started);
  }

  int64_t deadline = started + deadline_ms;
  int standing_down = 0;
  int64_t stand_down_until = 0;
  for (;;) {
    struct pollfd p[3];
    int n = 0;
    p[n++] = (struct pollfd){.fd = sfd, .events = POLLIN};
    int owner_i = -1, pid_i = -1;
    if (owner_fd >= 0) {
      owner_i = n;
      p[n++] = (struct pollfd){.fd = owner_fd, .events = POLLIN};
    }
    if (pidfd >= 0) {
      pid_i = n;
      p[n++] = (struct pollfd){.fd = pidfd, .events = POLLIN};
    }
    int64_t left = deadline - now_ms();
    if (standing_down) left = stand_down_until - now_ms();
    int r = poll(p, (nfds_t)n, left > 0 ? (int)(left > 60000 ? 60000 : left) : 0);
    if (r < 0 && errno == EINTR) continue;
    /* The owner's word first: after a SIGSTOP, a 'B' written before the deadline must win over it. */
    if (owner_i >= 0 && p[owner_i].revents) {
      char c;
      ssize_t got = read(owner_fd, &c, 1);
      if (got == 1 && c == 'X') return 0;
      if (got == 1 && c == 'T') return finish(OWNER_GONE, started);
      if (got == 1 && c == 'A') {
        /* A relay with no request of ours in flight cannot answer anything: skip it whole. */
        char rest[8];
        if (read(owner_fd, rest, sizeof rest) < 0) {
          /* the EOF or error shows on the next poll */
        }
        continue;
      }
      if (got == 1 && c == 'B') {
        /* A releasing owner that stops (SIGSTOP) must not hold past max-hold: finish for it half a second on. */
        standing_down = 1;
        stand_down_until = (deadline > now_ms() ? deadline : now_ms()) + 500;
        continue;
      }
      if (got == 0 || (got < 0 && errno != EINTR && errno != EAGAIN)) return finish(OWNER_GONE, started);
      continue;
    }
    if (standing_down) {
      /* Only the owner's 'X', its death, or its stopping mid-release matter now. */
      if (now_ms() >= stand_down_until) return finish(MAX_HOLD, started);
      continue;
    }
    if (p[0].revents) {
      struct signalfd_siginfo si;
      ssize_t got = read(sfd, &si, sizeof si);
      /* SIGUSR1: a safety net (protect's backup, the daemon's reaper) saying max-hold has passed. */
      return finish(got == (ssize_t)sizeof si && si.ssi_signo == SIGUSR1 ? MAX_HOLD : SIGNALLED, started);
    }
    if (pid_i >= 0 && p[pid_i].revents) return finish(WATCHED_EXITED, started);
    if (now_ms() >= deadline) return finish(MAX_HOLD, started);
  }
}
