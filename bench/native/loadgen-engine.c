// The load generator's native engine: the closed loop of bench/src/load/engine.ts
// in C, one epoll loop per thread, all threads in this one process, started and
// fed by runLoad (bench/src/loadgen.ts, through bench/src/load/native.ts).
//
// Why it exists: on the bench's 2-CPU host the client shares the CPUs with
// HAProxy and nginx, so the client's CPU per request limits the rate it drives.
// The JS engine, bare libuv handles and all, spends ~19 µs of user CPU per
// request against wrk's ~9 and reached ~90% of wrk's rate. This one spends ~5
// (load/compare.ts, one thread), in six system calls per request (socket,
// connect, write, epoll_ctl ADD, read, close; no epoll_ctl MOD/DEL, and no turn
// of the loop to learn that the connect is done: on lo the handshake is over
// when connect() returns, so the request is written at once, and the one read
// that sees EPOLLRDHUP is the last).
//
// Per request, exactly as engine.ts does it: a nonblocking socket (bound to
// --local if given), connect, write the pre-built request, read until the
// server's FIN, close; one record. Outcomes are engine.ts's: errno names
// (strerrorname_np: the names libuv gives, ECONNREFUSED...), classified as
// response.ts's errorOutcome; 'timeout-connect' / 'timeout-response' from a
// scan every min(50, timeout/10) ms; 'too-large' past MAX_RESPONSE_BYTES; a RST
// after a complete, correct response is ok with the note 'reset-after-response'.
// Only the common ok response is judged here (quick_ok, response.ts's quickOk
// byte for byte); any other response goes to the parent as raw bytes and is
// judged by response.ts's responseProblem, so there is one classification.
//
// usage: loadgen-engine --host IP --port P [--local IP] --payload HEX
//          [--expect HEX | --expect-any] [--no-quick] --timeout-ms T
//          [--requests N] [--duration-ms D] --concurrency C1[,C2,...]
//   one thread per --concurrency share. Exit status 2: bad usage; 1: a failure
//   (one line on stderr); 0: done.
//
// Control, parent -> engine, lines on stdin:
//   go T0       start; T0: the run's start in ms on CLOCK_MONOTONIC (Node's
//               process.hrtime clock), which every record's start is relative to
//   stop        start nothing more (runLoad's abort signal); in-flight finish
//   abort       the hard deadline: close everything in flight, record nothing
//               more, report how many were closed
//   (EOF on stdin: the parent is gone: abort and exit)
// Frames, engine -> parent, on stdout; little-endian; header u8 type, 3 bytes
// zero, u32 payload length:
//   1 READY     (empty)
//   2 TAG       u32 id, then the tag's bytes: sent once, before any record uses it
//   3 RECORDS   u32 requests in flight (all threads), then records of
//               f64 start ms (since T0), f64 latency ms, u8 outcome (OUTCOMES'
//               index), u8 kind, u16 0, i32 tag (-1: none), u32 raw length,
//               then that many bytes of the response:
//                 kind 0 final; kind 1 judge the raw response (read to FIN);
//                 kind 2 a reset (tag: its errno) after the raw bytes: ok with
//                 'reset-after-response' if they are the ok response
//   4 DONE      u32 requests closed by abort, u32 stop reason (engine.ts's STOP_*)
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

// engine.ts's constants, outcomes as response.ts numbers them
#define MAX_RESPONSE_BYTES (64 * 1024)
#define OUTCOME_OK 0
#define OUTCOME_RESET 1
#define OUTCOME_REFUSED 2
#define OUTCOME_TIMEOUT 3
#define OUTCOME_BAD_RESPONSE 4
#define STOP_REQUESTS 1
#define STOP_DURATION 2
#define STOP_SIGNAL 4

#define FRAME_READY 1
#define FRAME_TAG 2
#define FRAME_RECORDS 3
#define FRAME_DONE 4
#define KIND_FINAL 0
#define KIND_JUDGE 1
#define KIND_RESET_AFTER 2

#define RECORD_BYTES 28
#define FRAME_HEAD 8
/** records go out when this much is buffered, or FLUSH_MS after the last flush (thread.ts's batching) */
#define FLUSH_BYTES (32 * 1024)
#define FLUSH_MS 100.0
#define OUT_CAP (FLUSH_BYTES + RECORD_BYTES + MAX_RESPONSE_BYTES + 64)
#define MAX_TAGS 1000
#define ABORT_KEY UINT64_MAX

// ---------------------------------------------------------------- configuration

static struct {
  int family;
  struct sockaddr_storage addr;
  socklen_t addrlen;
  int has_local;
  struct sockaddr_storage local;
  socklen_t locallen;
  unsigned char *payload;
  size_t payload_len;
  unsigned char *expect; // NULL: any 200
  size_t expect_len;
  int quick;
  double timeout_ms;
  long long max_requests; // < 0: unbounded
  double duration_ms;     // < 0: unbounded
  int threads;
  int *concurrency;
} cfg = {.quick = 1, .max_requests = -1, .duration_ms = -1};

// ---------------------------------------------------------------- shared state

static double t0_ms;
static atomic_llong started;
static atomic_int stop_flag;
static atomic_int stop_reason;
static atomic_int hard_stop;
static int abort_fd;
static int done_fd;
static atomic_int threads_left;

static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t tag_lock = PTHREAD_MUTEX_INITIALIZER;
static char *tags[MAX_TAGS];
static int ntags;

static void die(const char *what) {
  fprintf(stderr, "loadgen-engine: %s: %s\n", what, strerror(errno));
  exit(1);
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void put_u32(unsigned char *p, uint32_t v) { memcpy(p, &v, 4); } // x86-64 and arm64: little-endian

/** One frame, whole, under the lock: frames of different threads never interleave. */
static void write_frame(unsigned char *frame, size_t len) {
  pthread_mutex_lock(&out_lock);
  size_t off = 0;
  while (off < len) {
    ssize_t n = write(1, frame + off, len - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      // the parent is gone: nobody to report to
      _exit(1);
    }
    off += (size_t)n;
  }
  pthread_mutex_unlock(&out_lock);
}

static void frame_head(unsigned char *p, int type, size_t payload) {
  memset(p, 0, FRAME_HEAD);
  p[0] = (unsigned char)type;
  put_u32(p + 4, (uint32_t)payload);
}

/** The id of a tag (an errno name, a timeout kind, a note), sent to the parent on first use. */
static int tag_id(const char *s) {
  pthread_mutex_lock(&tag_lock);
  int id = -1;
  for (int i = 0; i < ntags; i++)
    if (strcmp(tags[i], s) == 0) id = i;
  if (id < 0 && ntags < MAX_TAGS) {
    id = ntags++;
    tags[id] = strdup(s);
    size_t n = strlen(s);
    unsigned char *f = malloc(FRAME_HEAD + 4 + n);
    if (!tags[id] || !f) die("malloc");
    frame_head(f, FRAME_TAG, 4 + n);
    put_u32(f + FRAME_HEAD, (uint32_t)id);
    memcpy(f + FRAME_HEAD + 4, s, n);
    write_frame(f, FRAME_HEAD + 4 + n);
    free(f);
  }
  // (a full table cannot happen: the tags here are errno names and four notes)
  pthread_mutex_unlock(&tag_lock);
  return id;
}

/** response.ts's errorOutcome. */
static int error_outcome(int err) {
  switch (err) {
  case ECONNREFUSED:
    return OUTCOME_REFUSED;
  case ECONNRESET:
  case EPIPE:
    return OUTCOME_RESET;
  case ETIMEDOUT:
    return OUTCOME_TIMEOUT;
  default:
    return OUTCOME_BAD_RESPONSE;
  }
}

/** The errno's name as Node's getSystemErrorName gives it (engine.ts's errName falls back to E<n> too). */
static const char *err_name(int err, char *buf, size_t len) {
  const char *s = strerrorname_np(err);
  if (s) return s;
  snprintf(buf, len, "E%d", err);
  return buf;
}

// ---------------------------------------------------------------- the quick ok check (response.ts's quickOk)

static int header_is(const unsigned char *b, size_t from, size_t to, const char *name) {
  size_t n = strlen(name);
  if (to - from < n) return 0;
  for (size_t i = 0; i < n; i++)
    if ((b[from + i] | 0x20) != (unsigned char)name[i]) return 0;
  return 1;
}

/**
 * True only for the plain ok response: "HTTP/1.x 200", a Content-Length, no
 * Transfer-Encoding, and the expected body. Must never say true where
 * response.ts's parseResponse would not; false sends the response to the
 * parent, which gives the exact reason (or, for what this is too strict about,
 * still ok).
 */
static int quick_ok(const unsigned char *b, size_t len) {
  if (len < 16) return 0;
  if (memcmp(b, "HTTP/1.", 7) != 0 || (b[7] != '0' && b[7] != '1') || memcmp(b + 8, " 200", 4) != 0) return 0;
  long content_length = -1;
  size_t i = 12;
  while (i < len && b[i] != '\n') i++;
  for (;;) {
    if (i >= len || b[i - 1] != '\r') return 0;
    size_t from = i + 1, eol = from;
    while (eol < len && b[eol] != '\n') eol++;
    if (eol >= len) return 0;
    if (eol == from + 1 && b[from] == '\r') {
      if (content_length < 0) return 0;
      size_t body = eol + 1;
      if (len - body < (size_t)content_length) return 0;
      if (!cfg.expect) return 1;
      if ((size_t)content_length != cfg.expect_len) return 0;
      return memcmp(b + body, cfg.expect, cfg.expect_len) == 0;
    }
    if (header_is(b, from, eol, "transfer-encoding:")) return 0;
    if (header_is(b, from, eol, "content-length:")) {
      if (content_length >= 0) return 0;
      size_t j = from + strlen("content-length:");
      while (j < eol && (b[j] == ' ' || b[j] == '\t')) j++;
      long n = 0;
      int digits = 0;
      while (j < eol && b[j] >= '0' && b[j] <= '9' && digits < 9) {
        n = n * 10 + (b[j] - '0');
        j++;
        digits++;
      }
      if (digits == 0 || j != eol - 1) return 0;
      content_length = n;
    }
    i = eol;
  }
}

// ---------------------------------------------------------------- one thread's engine

/** One request at a time; a slot per unit of the thread's concurrency. */
struct slot {
  int fd;
  int busy;
  int connected;
  /** bumped per request: an epoll event of a closed connection never reaches its successor */
  uint32_t gen;
  size_t written;
  double t0;
  unsigned char *buf;
  size_t len, cap;
};

struct engine {
  int index;
  int n;
  struct slot *slots;
  int ep;
  /** slots whose request has ended, to start their next one after this turn's events (no recursion) */
  int *ready;
  int nready;
  int *starting;
  int active;
  atomic_int in_flight;
  unsigned char *out;
  size_t out_len;
  double last_flush;
  int aborted;
  pthread_t thread;
};

static struct engine *engines;

static void request_stop(int code) {
  int zero = 0;
  atomic_compare_exchange_strong(&stop_reason, &zero, code);
  atomic_store(&stop_flag, 1);
}

static void flush(struct engine *e, double now) {
  e->last_flush = now;
  if (e->out_len == FRAME_HEAD + 4) return;
  int in_flight = 0;
  for (int i = 0; i < cfg.threads; i++) in_flight += atomic_load_explicit(&engines[i].in_flight, memory_order_relaxed);
  frame_head(e->out, FRAME_RECORDS, e->out_len - FRAME_HEAD);
  put_u32(e->out + FRAME_HEAD, (uint32_t)in_flight);
  write_frame(e->out, e->out_len);
  e->out_len = FRAME_HEAD + 4;
}

static void record(struct engine *e, struct slot *s, double end, int outcome, int kind, int tag, size_t raw) {
  if (e->out_len + RECORD_BYTES + raw > OUT_CAP) flush(e, end);
  unsigned char *p = e->out + e->out_len;
  double start = s->t0 - t0_ms, latency = end - s->t0;
  memcpy(p, &start, 8);
  memcpy(p + 8, &latency, 8);
  p[16] = (unsigned char)outcome;
  p[17] = (unsigned char)kind;
  p[18] = p[19] = 0;
  int32_t t = tag;
  memcpy(p + 20, &t, 4);
  put_u32(p + 24, (uint32_t)raw);
  if (raw) memcpy(p + RECORD_BYTES, s->buf, raw);
  e->out_len += RECORD_BYTES + raw;
  if (e->out_len >= FLUSH_BYTES) flush(e, end);
}

/** Record the request's outcome, close its connection; its slot goes on after this turn. */
static void finish(struct engine *e, struct slot *s, int outcome, int kind, int tag, size_t raw) {
  if (!s->busy) return;
  double end = now_ms();
  s->busy = 0;
  if (s->fd >= 0) close(s->fd);
  s->fd = -1;
  atomic_fetch_sub_explicit(&e->in_flight, 1, memory_order_relaxed);
  record(e, s, end, outcome, kind, tag, raw);
  e->ready[e->nready++] = (int)(s - e->slots);
}

static void finish_tag(struct engine *e, struct slot *s, int outcome, const char *tag) { finish(e, s, outcome, KIND_FINAL, tag_id(tag), 0); }

/** engine.ts's failed(): an error; a reset after a whole, correct response is ok with a note. */
static void failed(struct engine *e, struct slot *s, int err) {
  char buf[32];
  const char *name = err_name(err, buf, sizeof buf);
  int outcome = error_outcome(err);
  if (outcome == OUTCOME_RESET && s->len > 0) {
    if (cfg.quick && quick_ok(s->buf, s->len)) finish_tag(e, s, OUTCOME_OK, "reset-after-response");
    else finish(e, s, outcome, KIND_RESET_AFTER, tag_id(name), s->len);
    return;
  }
  finish_tag(e, s, outcome, name);
}

/** The server's FIN: the whole response is in. */
static void eof(struct engine *e, struct slot *s) {
  if (cfg.quick && quick_ok(s->buf, s->len)) finish(e, s, OUTCOME_OK, KIND_FINAL, -1, 0);
  else finish(e, s, OUTCOME_BAD_RESPONSE, KIND_JUDGE, -1, s->len);
}

/** engine.ts's mayStart: may another request start now? Stops the run (all threads) when the answer turns to no. */
static int may_start(double now) {
  if (atomic_load_explicit(&hard_stop, memory_order_relaxed) || atomic_load_explicit(&stop_flag, memory_order_relaxed)) return 0;
  if (cfg.max_requests >= 0 && atomic_fetch_add(&started, 1) >= cfg.max_requests) {
    request_stop(STOP_REQUESTS);
    return 0;
  }
  if (cfg.duration_ms >= 0 && now - t0_ms >= cfg.duration_ms) {
    request_stop(STOP_DURATION);
    return 0;
  }
  return 1;
}

static int write_payload(struct slot *s) {
  while (s->written < cfg.payload_len) {
    ssize_t n = write(s->fd, cfg.payload + s->written, cfg.payload_len - s->written);
    if (n < 0) return errno == EINTR ? 0 : -errno;
    s->written += (size_t)n;
  }
  return 0;
}

/** One request on a fresh connection. */
static void begin(struct engine *e, struct slot *s) {
  s->busy = 1;
  s->connected = 0;
  s->len = 0;
  s->written = 0;
  s->gen++;
  atomic_fetch_add_explicit(&e->in_flight, 1, memory_order_relaxed);
  s->t0 = now_ms();
  s->fd = socket(cfg.family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (s->fd < 0) {
    failed(e, s, errno);
    return;
  }
  if (cfg.has_local && bind(s->fd, (struct sockaddr *)&cfg.local, cfg.locallen) < 0) {
    failed(e, s, errno);
    return;
  }
  if (connect(s->fd, (struct sockaddr *)&cfg.addr, cfg.addrlen) < 0 && errno != EINPROGRESS) {
    failed(e, s, errno);
    return;
  }
  // On lo the handshake has run by the time connect() returns (the SYN-ACK
  // waits in the socket's backlog, processed as connect releases the socket),
  // so the request goes out now, without a turn of the loop for EPOLLOUT.
  // EAGAIN: still connecting; an error (ECONNREFUSED...) is connect's own
  // (tcp_sendmsg reports the socket's pending error first).
  uint32_t events = EPOLLIN | EPOLLRDHUP | EPOLLET;
  ssize_t n = write(s->fd, cfg.payload, cfg.payload_len);
  if (n >= 0) {
    s->connected = 1;
    s->written = (size_t)n;
    if (s->written < cfg.payload_len) events |= EPOLLOUT;
  } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
    events |= EPOLLOUT;
  } else {
    failed(e, s, errno);
    return;
  }
  struct epoll_event ev = {.events = events, .data.u64 = ((uint64_t)s->gen << 32) | (uint32_t)(s - e->slots)};
  if (epoll_ctl(e->ep, EPOLL_CTL_ADD, s->fd, &ev) < 0) failed(e, s, errno);
}

/** Read what there is; the FIN (read 0) ends the request. */
static void readable(struct engine *e, struct slot *s, uint32_t events) {
  for (;;) {
    if (s->len == s->cap) {
      size_t cap = s->cap * 2 > MAX_RESPONSE_BYTES + 1 ? MAX_RESPONSE_BYTES + 1 : s->cap * 2;
      unsigned char *b = realloc(s->buf, cap);
      if (!b) die("realloc");
      s->buf = b;
      s->cap = cap;
    }
    size_t room = s->cap - s->len;
    ssize_t n = read(s->fd, s->buf + s->len, room);
    if (n > 0) {
      s->len += (size_t)n;
      if (s->len > MAX_RESPONSE_BYTES) {
        finish_tag(e, s, OUTCOME_BAD_RESPONSE, "too-large");
        return;
      }
      // The FIN came with this event (EPOLLRDHUP) and the read did not fill
      // the room: everything before the FIN is in (the kernel queues the FIN
      // only behind all the data), so the read that would return 0 is skipped.
      if ((size_t)n < room && (events & EPOLLRDHUP) && !(events & (EPOLLERR | EPOLLHUP))) {
        eof(e, s);
        return;
      }
      continue;
    }
    if (n == 0) {
      eof(e, s);
      return;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) failed(e, s, errno);
    return;
  }
}

static void event(struct engine *e, struct slot *s, uint32_t events) {
  if (!s->connected) {
    if (events & (EPOLLERR | EPOLLHUP)) {
      int err = 0;
      socklen_t l = sizeof err;
      if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &l) < 0) err = errno;
      if (err != 0) {
        failed(e, s, err);
        return;
      }
    }
    if (!(events & EPOLLOUT)) return;
    s->connected = 1;
  }
  if (s->written < cfg.payload_len && (events & EPOLLOUT)) {
    int r = write_payload(s);
    if (r < 0 && r != -EAGAIN && r != -EWOULDBLOCK) {
      failed(e, s, -r);
      return;
    }
  }
  if (events & (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP)) readable(e, s, events);
}

/** The timer wheel, one turn: requests past their timeout end as timeouts. */
static void scan(struct engine *e, double now) {
  for (int i = 0; i < e->n; i++) {
    struct slot *s = &e->slots[i];
    if (s->busy && now - s->t0 >= cfg.timeout_ms) finish_tag(e, s, OUTCOME_TIMEOUT, s->connected ? "timeout-response" : "timeout-connect");
  }
}

static void *run(void *arg) {
  struct engine *e = arg;
  // engine.ts's scan interval: a timeout ends up to this much late
  double scan_ms = (double)(long long)(cfg.timeout_ms / 10);
  if (scan_ms > 50) scan_ms = 50;
  if (scan_ms < 1) scan_ms = 1;
  double next_scan = now_ms() + scan_ms;
  e->last_flush = now_ms();
  e->active = e->n;
  for (int i = 0; i < e->n; i++) e->ready[e->nready++] = i;
  struct epoll_event evs[256];
  while (e->active > 0) {
    // engine.ts's next(): each slot whose request ended starts its next one,
    // or retires. Once per turn: a request that fails at once (EADDRNOTAVAIL)
    // is back on the list for the next turn, after the others' events.
    if (e->nready > 0) {
      int pending = e->nready;
      memcpy(e->starting, e->ready, sizeof(int) * (size_t)pending);
      e->nready = 0;
      double now = now_ms();
      for (int k = 0; k < pending; k++) {
        if (may_start(now)) begin(e, &e->slots[e->starting[k]]);
        else e->active--;
      }
    }
    if (e->active == 0) break;
    double now = now_ms();
    int wait = e->nready > 0 ? 0 : next_scan > now ? (int)(next_scan - now) + 1 : 0;
    int n = epoll_wait(e->ep, evs, 256, wait);
    if (n < 0 && errno != EINTR) die("epoll_wait");
    for (int i = 0; i < n; i++) {
      uint64_t key = evs[i].data.u64;
      if (key == ABORT_KEY) continue;
      struct slot *s = &e->slots[(uint32_t)key];
      if (s->busy && s->gen == (uint32_t)(key >> 32)) event(e, s, evs[i].events);
    }
    if (atomic_load(&hard_stop)) break;
    now = now_ms();
    if (now >= next_scan) {
      scan(e, now);
      next_scan = now + scan_ms;
    }
    if (now - e->last_flush >= FLUSH_MS) flush(e, now);
  }
  if (atomic_load(&hard_stop)) {
    // the hard deadline: close what is in flight, record nothing more (what
    // finished before it still goes out, as in thread.ts)
    for (int i = 0; i < e->n; i++) {
      struct slot *s = &e->slots[i];
      if (!s->busy) continue;
      s->busy = 0;
      close(s->fd);
      e->aborted++;
    }
    atomic_store(&e->in_flight, 0);
  }
  flush(e, now_ms());
  if (atomic_fetch_sub(&threads_left, 1) == 1) {
    uint64_t one = 1;
    if (write(done_fd, &one, 8) < 0) die("eventfd");
  }
  return NULL;
}

// ---------------------------------------------------------------- main: arguments, control, threads

static void usage(const char *why) {
  fprintf(stderr,
          "loadgen-engine: %s\n"
          "usage: loadgen-engine --host IP --port P [--local IP] --payload HEX [--expect HEX | --expect-any] [--no-quick]\n"
          "         --timeout-ms T [--requests N] [--duration-ms D] --concurrency C1[,C2,...]\n"
          "  (run by runLoad, bench/src/load/native.ts; control lines on stdin, record frames on stdout)\n",
          why);
  exit(2);
}

static unsigned char *hex(const char *s, size_t *len) {
  size_t n = strlen(s);
  if (n % 2) usage("odd hex length");
  unsigned char *b = malloc(n / 2 + 1);
  if (!b) die("malloc");
  for (size_t i = 0; i < n / 2; i++) {
    unsigned v;
    if (sscanf(s + 2 * i, "%2x", &v) != 1) usage("bad hex");
    b[i] = (unsigned char)v;
  }
  *len = n / 2;
  return b;
}

static socklen_t ip_addr(const char *ip, int port, struct sockaddr_storage *ss, int *family) {
  memset(ss, 0, sizeof *ss);
  struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
  struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
  if (inet_pton(AF_INET, ip, &a4->sin_addr) == 1) {
    a4->sin_family = AF_INET;
    a4->sin_port = htons((uint16_t)port);
    *family = AF_INET;
    return sizeof *a4;
  }
  if (inet_pton(AF_INET6, ip, &a6->sin6_addr) == 1) {
    a6->sin6_family = AF_INET6;
    a6->sin6_port = htons((uint16_t)port);
    *family = AF_INET6;
    return sizeof *a6;
  }
  usage("not an IP address");
  return 0;
}

static double number(const char *s, const char *flag) {
  char *end;
  double v = strtod(s, &end);
  if (*s == 0 || *end != 0 || v < 0) {
    fprintf(stderr, "loadgen-engine: %s: not a number >= 0: %s\n", flag, s);
    exit(2);
  }
  return v;
}

static void parse(int argc, char **argv) {
  const char *host = NULL, *local = NULL, *conc = NULL;
  int port = -1;
  for (int i = 1; i < argc; i++) {
    const char *f = argv[i];
    if (strcmp(f, "--expect-any") == 0) {
      cfg.expect = NULL;
      continue;
    }
    if (strcmp(f, "--no-quick") == 0) {
      cfg.quick = 0;
      continue;
    }
    if (i + 1 >= argc) usage("a flag without its value");
    const char *v = argv[++i];
    if (strcmp(f, "--host") == 0) host = v;
    else if (strcmp(f, "--port") == 0) port = (int)number(v, f);
    else if (strcmp(f, "--local") == 0) local = v;
    else if (strcmp(f, "--payload") == 0) cfg.payload = hex(v, &cfg.payload_len);
    else if (strcmp(f, "--expect") == 0) cfg.expect = hex(v, &cfg.expect_len);
    else if (strcmp(f, "--timeout-ms") == 0) cfg.timeout_ms = number(v, f);
    else if (strcmp(f, "--requests") == 0) cfg.max_requests = (long long)number(v, f);
    else if (strcmp(f, "--duration-ms") == 0) cfg.duration_ms = number(v, f);
    else if (strcmp(f, "--concurrency") == 0) conc = v;
    else usage("unknown flag");
  }
  if (!host || port < 1 || port > 65535 || !cfg.payload || cfg.payload_len == 0 || !conc || cfg.timeout_ms <= 0) usage("missing or bad arguments");
  cfg.addrlen = ip_addr(host, port, &cfg.addr, &cfg.family);
  if (local) {
    int fam;
    cfg.locallen = ip_addr(local, 0, &cfg.local, &fam);
    if (fam != cfg.family) usage("--local is not of --host's address family");
    cfg.has_local = 1;
  }
  cfg.concurrency = malloc(sizeof(int) * 64);
  if (!cfg.concurrency) die("malloc");
  for (const char *p = conc; *p;) {
    char *end;
    long c = strtol(p, &end, 10);
    if (end == p || c < 1 || c > 100000 || cfg.threads == 64) usage("--concurrency: 1 to 64 shares, each 1 to 100000");
    cfg.concurrency[cfg.threads++] = (int)c;
    p = *end == ',' ? end + 1 : end;
    if (*end != ',' && *end != 0) usage("--concurrency: a comma-separated list");
  }
}

/** One control line from stdin ("" at EOF). */
static int control_line(char *line, size_t cap) {
  size_t n = 0;
  while (n + 1 < cap) {
    char c;
    ssize_t r = read(0, &c, 1);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    if (c == '\n') break;
    line[n++] = c;
  }
  line[n] = 0;
  return (int)n;
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN); // a write to a reset connection is an EPIPE record, not a death
  parse(argc, argv);
  abort_fd = eventfd(0, EFD_CLOEXEC);
  done_fd = eventfd(0, EFD_CLOEXEC);
  if (abort_fd < 0 || done_fd < 0) die("eventfd");
  engines = calloc((size_t)cfg.threads, sizeof *engines);
  if (!engines) die("calloc");
  for (int t = 0; t < cfg.threads; t++) {
    struct engine *e = &engines[t];
    e->index = t;
    e->n = cfg.concurrency[t];
    e->slots = calloc((size_t)e->n, sizeof *e->slots);
    e->ready = calloc((size_t)e->n, sizeof(int));
    e->starting = calloc((size_t)e->n, sizeof(int));
    e->out = malloc(OUT_CAP);
    if (!e->slots || !e->ready || !e->starting || !e->out) die("malloc");
    e->out_len = FRAME_HEAD + 4;
    for (int i = 0; i < e->n; i++) {
      e->slots[i].fd = -1;
      e->slots[i].cap = 1024;
      e->slots[i].buf = malloc(1024);
      if (!e->slots[i].buf) die("malloc");
    }
    e->ep = epoll_create1(EPOLL_CLOEXEC);
    if (e->ep < 0) die("epoll_create1");
    // level-triggered and never read: once written, it wakes every thread for good
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = ABORT_KEY};
    if (epoll_ctl(e->ep, EPOLL_CTL_ADD, abort_fd, &ev) < 0) die("epoll_ctl");
  }
  unsigned char head[FRAME_HEAD];
  frame_head(head, FRAME_READY, 0);
  write_frame(head, FRAME_HEAD);

  char line[128];
  control_line(line, sizeof line);
  if (strncmp(line, "go ", 3) != 0) return 0; // the parent gave up before the start
  t0_ms = number(line + 3, "go");
  atomic_store(&threads_left, cfg.threads);
  for (int t = 0; t < cfg.threads; t++)
    if ((errno = pthread_create(&engines[t].thread, NULL, run, &engines[t])) != 0) die("pthread_create");

  // Control until every thread is done: stop, abort, or the parent's end.
  int stdin_open = 1;
  for (;;) {
    struct pollfd p[2] = {{.fd = done_fd, .events = POLLIN}, {.fd = stdin_open ? 0 : -1, .events = POLLIN}};
    if (poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      die("poll");
    }
    if (p[0].revents) break;
    if (p[1].revents) {
      int n = control_line(line, sizeof line);
      if (n == 0 || strcmp(line, "abort") == 0) {
        if (n == 0) stdin_open = 0;
        atomic_store(&hard_stop, 1);
        uint64_t one = 1;
        if (write(abort_fd, &one, 8) < 0) die("eventfd");
      } else if (strcmp(line, "stop") == 0) {
        request_stop(STOP_SIGNAL);
      }
    }
  }
  unsigned aborted = 0;
  for (int t = 0; t < cfg.threads; t++) {
    pthread_join(engines[t].thread, NULL);
    aborted += (unsigned)engines[t].aborted;
  }
  unsigned char done[FRAME_HEAD + 8];
  frame_head(done, FRAME_DONE, 8);
  put_u32(done + FRAME_HEAD, aborted);
  put_u32(done + FRAME_HEAD + 4, (uint32_t)atomic_load(&stop_reason));
  write_frame(done, sizeof done);
  return 0;
}
