// One engine of the load generator: a share of the closed loop's concurrency
// (or the whole open loop), run on one thread, the caller's or a worker's
// (thread.ts). runLoad (loadgen.ts) owns the run; engines only start
// requests, finish them with an outcome and hand one record per request to a
// sink.
//
// Why it looks the way it does: on this project's 2-CPU machines the client
// shares the CPUs with HAProxy and nginx, so every microsecond the generator
// spends per request is a microsecond the servers do not get, and the rate it
// drives drops (the seed's `ab`, a C program, drove 1.8x the rate of the first,
// net.Socket-and-Promise generator on the same pair). So, per request:
//
// - a bare libuv TCP handle (Node's own tcp_wrap binding, what net.Socket is
//   built on), not a net.Socket: no stream state machines, no events, no
//   nextTicks, no half-close dance; connect, write the pre-built request, read
//   until the server's FIN, close. Node versions without that binding get the
//   same engine over net.Socket (transport "socket").
// - no allocation but the handle and its two request objects: reads land in
//   one buffer shared by all of the engine's connections (libuv reads one at a
//   time) and are copied into the slot's own, reused, buffer; the callbacks
//   are made once per slot, not per request.
// - no timer per request: one interval per engine scans the slots for
//   requests past their timeout (so a timeout fires up to one scan late).
// - the common ok response is checked byte by byte (response.ts), without
//   strings.
//
// What is left (load/compare.ts, on the bench's host): about 8 µs of user CPU
// per request, against about 33 for the net.Socket generator and 2 for ab and
// wrk; the kernel's part, 40-50 µs (on lo most of the TCP work of both ends
// runs in the client's connect and close), is the same for all of them.
//
// The closed loop's default is now the native engine (load/native.ts,
// bench/native/loadgen-engine.c), the same loop in C; this one runs the open
// loop, small runs, and any run that asks for it (engine: 'js').
//
// Clocks: performance.now() has a different origin in every thread; engines
// convert with monoOffset(), so that the run's start (t0) and every record's
// start are on one clock whatever thread measured them.

import { connect, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { getSystemErrorName } from 'node:util';
import { errorOutcome, expectation, responseProblem, OUTCOME_BAD_RESPONSE, OUTCOME_OK, OUTCOME_RESET, OUTCOME_TIMEOUT, type Expectation } from './response.js';

/** Distinct tags (failure details, notes) an engine keeps apart; a server that
 * answers with thousands of different statuses gets the rest counted as "other". */
const MAX_TAGS = 10_000;

/** A response larger than this is a bad one ("too-large"). */
export const MAX_RESPONSE_BYTES = 64 * 1024;

// ---------------------------------------------------------------- control block

// Int32 slots of the SharedArrayBuffer that runLoad and its engines share.
/** requests started (and, open loop, skipped at the in-flight cap) across engines; only counted when `requests` bounds the run */
export const CTL_STARTED = 0;
/** non-zero: start nothing new */
export const CTL_STOP = 1;
/** the first StopCode */
export const CTL_REASON = 2;
/** CTL_INFLIGHT + engine index: that engine's requests in flight */
export const CTL_INFLIGHT = 3;

export const STOP_REQUESTS = 1;
export const STOP_DURATION = 2;
export const STOP_DEADLINE = 3;
export const STOP_SIGNAL = 4;

export function newControl(engines: number): Int32Array {
  return new Int32Array(new SharedArrayBuffer(4 * (CTL_INFLIGHT + engines)));
}

/** Stop starting requests; the first reason given is the one that stays. */
export function requestStop(ctl: Int32Array, code: number): void {
  Atomics.compareExchange(ctl, CTL_REASON, 0, code);
  Atomics.store(ctl, CTL_STOP, 1);
}

/**
 * Add to performance.now() to get a time on CLOCK_MONOTONIC (the clock of
 * process.hrtime), the same in every thread of the process.
 */
export function monoOffset(): number {
  // performance.now() is uv_hrtime() minus this thread's origin: the offset is
  // a constant, read once (the smallest of a few reads, to skip a preemption).
  let best = Number.POSITIVE_INFINITY;
  let offset = 0;
  for (let i = 0; i < 5; i++) {
    const a = performance.now();
    const hr = Number(process.hrtime.bigint()) / 1e6;
    const b = performance.now();
    if (b - a < best) {
      best = b - a;
      offset = hr - (a + b) / 2;
    }
  }
  return offset;
}

// ---------------------------------------------------------------- Node's tcp_wrap binding

// The slice of Node's internal TCP handle API the engine uses (lib/net.js and
// lib/internal/stream_base_commons.js use the same calls).
interface TcpHandle {
  onread: ((this: TcpHandle) => void) | null;
  useUserBuffer(buf: Uint8Array): void;
  bind(address: string, port: number): number;
  bind6(address: string, port: number, flags: number): number;
  connect(req: ConnectReq, address: string, port: number): number;
  connect6(req: ConnectReq, address: string, port: number): number;
  readStart(): number;
  writeBuffer(req: WriteReq, data: Uint8Array): number;
  close(): void;
}
interface ConnectReq {
  oncomplete: (status: number, handle: TcpHandle) => void;
}
interface WriteReq {
  handle: TcpHandle | null;
  oncomplete: (status: number, handle: TcpHandle) => void;
  async: boolean;
  buffer: Uint8Array | null;
}
interface HandleBinding {
  TCP: new (type: number) => TcpHandle;
  TCPConnectWrap: new () => ConnectReq;
  WriteWrap: new () => WriteReq;
  SOCKET: number;
  /** streamBaseState: where the C++ side leaves a read's byte count and a write's sync/async flag */
  state: Int32Array;
  kReadBytesOrError: number;
  kLastWriteWasAsync: number;
}

/** libuv's UV_EOF: the read that sees the peer's FIN */
const UV_EOF = -4095;

let binding: HandleBinding | null | undefined;

/** Node's tcp_wrap and stream_wrap bindings, or null where this Node does not offer them. */
export function handleBinding(): HandleBinding | null {
  if (binding !== undefined) return binding;
  binding = null;
  const get = (process as unknown as { binding?: (name: string) => unknown }).binding;
  if (typeof get !== 'function') return null;
  try {
    const tcp = get.call(process, 'tcp_wrap') as {
      TCP?: HandleBinding['TCP'];
      TCPConnectWrap?: HandleBinding['TCPConnectWrap'];
      constants?: { SOCKET?: number };
    };
    const sw = get.call(process, 'stream_wrap') as {
      WriteWrap?: HandleBinding['WriteWrap'];
      streamBaseState?: unknown;
      kReadBytesOrError?: number;
      kLastWriteWasAsync?: number;
    };
    const proto = tcp.TCP?.prototype as Partial<Record<keyof TcpHandle, unknown>> | undefined;
    const methods: Array<keyof TcpHandle> = ['useUserBuffer', 'bind', 'bind6', 'connect', 'connect6', 'readStart', 'writeBuffer', 'close'];
    if (
      typeof tcp.TCP !== 'function' ||
      typeof tcp.TCPConnectWrap !== 'function' ||
      typeof tcp.constants?.SOCKET !== 'number' ||
      typeof sw.WriteWrap !== 'function' ||
      !(sw.streamBaseState instanceof Int32Array) ||
      typeof sw.kReadBytesOrError !== 'number' ||
      typeof sw.kLastWriteWasAsync !== 'number' ||
      !proto ||
      methods.some((m) => typeof proto[m] !== 'function')
    ) {
      return null;
    }
    binding = {
      TCP: tcp.TCP,
      TCPConnectWrap: tcp.TCPConnectWrap,
      WriteWrap: sw.WriteWrap,
      SOCKET: tcp.constants.SOCKET,
      state: sw.streamBaseState,
      kReadBytesOrError: sw.kReadBytesOrError,
      kLastWriteWasAsync: sw.kLastWriteWasAsync,
    };
  } catch {
    binding = null;
  }
  return binding;
}

function errName(status: number): string {
  try {
    return getSystemErrorName(status);
  } catch {
    return `E${-status}`;
  }
}

// ---------------------------------------------------------------- engine

export type Transport = 'handle' | 'socket';

export interface OpenLoopConfig {
  rate: number;
  maxInFlight: number;
  lateThresholdMs: number;
}

export interface OpenLoopStats {
  rate: number;
  scheduled: number;
  started: number;
  missed: number;
  late: number;
  maxStartLagMs: number;
  maxInFlightSeen: number;
}

/** Everything an engine needs; plain data, so it can be a worker's workerData. */
export interface EngineConfig {
  /** this engine's index (its in-flight slot in the control block) */
  index: number;
  host: string;
  family: 4 | 6;
  port: number;
  localAddress?: string;
  /** the request, every byte of it */
  payload: Uint8Array;
  expectBody: string | null;
  timeoutMs: number;
  /** across all engines (Infinity: unbounded) */
  maxRequests: number;
  /** from t0 (Infinity: unbounded) */
  durationMs: number;
  transport: Transport;
  mode: 'closed' | 'open';
  /** closed loop: this engine's share of the concurrency */
  concurrency: number;
  open?: OpenLoopConfig;
}

/** Where an engine's records go: runLoad's tally directly, or a batch for the parent thread. */
export interface RecordSink {
  /**
   * One finished request: start (ms since the run's t0), latency (ms), outcome
   * (its index in OUTCOMES) and tag (index into engine.tags: the detail of a
   * failure or the note on an ok request; -1 for none).
   */
  record(startMs: number, latencyMs: number, outcome: number, tag: number): void;
  /** called on every timeout scan (a worker's sink flushes its batch here) */
  tick?(now: number): void;
}

/** One request at a time: the closed loop has one per unit of concurrency, the open loop a pool. */
interface Slot {
  handle: TcpHandle | null;
  sock: Socket | null;
  /** performance.now() just before connect */
  t0: number;
  busy: boolean;
  connected: boolean;
  /** the response so far */
  acc: Buffer;
  len: number;
  // The callbacks are made once per slot, not per request; each checks that
  // it is about the slot's current connection.
  onConnect: (status: number, handle: TcpHandle) => void;
  onWrite: (status: number, handle: TcpHandle) => void;
  onRead: (this: TcpHandle) => void;
  onSockConnect: (this: Socket) => void;
  onSockData: (this: Socket, n: number) => boolean;
  onSockEnd: (this: Socket) => void;
  onSockError: (this: Socket, e: NodeJS.ErrnoException) => void;
  onSockClose: (this: Socket) => void;
}

function newSlot(e: Engine): Slot {
  const slot: Slot = {
    handle: null,
    sock: null,
    t0: 0,
    busy: false,
    connected: false,
    acc: Buffer.allocUnsafe(1024),
    len: 0,
    onConnect: (status, handle) => {
      if (handle === slot.handle) e.connected(slot, status);
    },
    onWrite: (status, handle) => {
      if (handle === slot.handle && status < 0) e.failed(slot, errName(status));
    },
    onRead: function (this: TcpHandle) {
      if (this === slot.handle) e.read(slot, e.state![e.kRead]!);
    },
    onSockConnect: function (this: Socket) {
      if (this === slot.sock) {
        slot.connected = true;
        this.write(e.payload);
      }
    },
    onSockData: function (this: Socket, n: number) {
      if (this === slot.sock) e.read(slot, n);
      return true; // keep reading
    },
    onSockEnd: function (this: Socket) {
      if (this === slot.sock) e.read(slot, UV_EOF);
    },
    onSockError: function (this: Socket, err: NodeJS.ErrnoException) {
      if (this === slot.sock) e.failed(slot, err.code ?? 'EUNKNOWN');
    },
    // Safety net: 'close' without 'end' or 'error' should not happen, but a
    // request must never stay unclassified.
    onSockClose: function (this: Socket) {
      if (this === slot.sock) e.finish(slot, OUTCOME_BAD_RESPONSE, 'closed');
    },
  };
  return slot;
}

export class Engine {
  /** tag strings, by tag index */
  readonly tags: string[] = [];
  private readonly tagIds = new Map<string, number>();
  readonly payload: Buffer;
  readonly state: Int32Array | null;
  readonly kRead: number;
  private readonly b: HandleBinding | null;
  private readonly expect: Expectation;
  /** every read of the handle transport lands here first */
  private readonly readBuf = Buffer.allocUnsafe(MAX_RESPONSE_BYTES);
  private readonly slots: Slot[] = [];
  private readonly free: Slot[] = [];
  private t0 = 0;
  private inFlight = 0;
  /** where inFlight is published in the control block (a plain store: a progress figure, read with Atomics.load) */
  private readonly inFlightAt: number;
  private closedActive = 0;
  private openDone = false;
  private running = false;
  private hardStopped = false;
  private scanTimer: NodeJS.Timeout | undefined;
  private openTimer: NodeJS.Timeout | undefined;
  private onDone: (() => void) | null = null;
  readonly openStats: OpenLoopStats | undefined;

  constructor(
    private readonly cfg: EngineConfig,
    private readonly ctl: Int32Array,
    private readonly sink: RecordSink,
  ) {
    this.payload = Buffer.from(cfg.payload.buffer, cfg.payload.byteOffset, cfg.payload.byteLength);
    this.b = cfg.transport === 'handle' ? handleBinding() : null;
    if (cfg.transport === 'handle' && !this.b) throw new Error('load generator: this Node.js has no tcp_wrap binding; use the socket transport');
    this.state = this.b ? this.b.state : null;
    this.kRead = this.b ? this.b.kReadBytesOrError : 0;
    this.expect = expectation(cfg.expectBody);
    this.inFlightAt = CTL_INFLIGHT + cfg.index;
    if (cfg.mode === 'open') {
      const o = cfg.open!;
      this.openStats = { rate: o.rate, scheduled: 0, started: 0, missed: 0, late: 0, maxStartLagMs: 0, maxInFlightSeen: 0 };
    }
  }

  /** The index of a tag string (detail or note), added on first use; past MAX_TAGS distinct ones, all share "other". */
  tagId(s: string): number {
    let id = this.tagIds.get(s);
    if (id === undefined) {
      if (this.tags.length >= MAX_TAGS && s !== 'other') return this.tagId('other');
      id = this.tags.length;
      this.tags.push(s);
      this.tagIds.set(s, id);
    }
    return id;
  }

  /** Start at t0 (on the monotonic clock, see monoOffset); `done` when the engine has nothing left in flight and may start nothing more. */
  start(t0Mono: number, offset: number, done: () => void): void {
    this.t0 = t0Mono - offset;
    this.onDone = done;
    this.running = true;
    const scanMs = Math.max(1, Math.min(50, Math.floor(this.cfg.timeoutMs / 10)));
    this.scanTimer = setInterval(() => this.scan(), scanMs);
    if (this.cfg.mode === 'closed') {
      const n = this.cfg.concurrency;
      this.closedActive = n;
      for (let i = 0; i < n; i++) this.slots.push(newSlot(this));
      for (let i = 0; i < n && this.running; i++) this.next(this.slots[i]!, performance.now());
    } else {
      this.openTick(0);
    }
  }

  /** The hard deadline: close everything in flight, record nothing more, do not call `done`. Returns how many were in flight. */
  abort(): number {
    if (this.hardStopped) return 0;
    this.hardStopped = true;
    let n = 0;
    for (const s of this.slots) {
      if (!s.busy) continue;
      n++;
      s.busy = false;
      this.close(s);
    }
    this.inFlight = 0;
    this.ctl[this.inFlightAt] = 0;
    // stopped, but not "done": the caller of abort knows, and counts these n
    this.onDone = null;
    this.end();
    return n;
  }

  // ------------------------------------------------------------ starting

  /** May another request start now (`now`: performance.now())? Stops the run (for every engine) when the answer turns to no. */
  private mayStart(now: number): boolean {
    if (this.hardStopped) return false;
    const ctl = this.ctl;
    if (Atomics.load(ctl, CTL_STOP) !== 0) return false;
    if (this.cfg.maxRequests !== Number.POSITIVE_INFINITY && Atomics.add(ctl, CTL_STARTED, 1) >= this.cfg.maxRequests) {
      requestStop(ctl, STOP_REQUESTS);
      return false;
    }
    if (now - this.t0 >= this.cfg.durationMs) {
      requestStop(ctl, STOP_DURATION);
      return false;
    }
    return true;
  }

  /** Closed loop: the slot's next request, or the slot retires. */
  private next(s: Slot, now: number): void {
    if (this.mayStart(now)) {
      this.begin(s);
      return;
    }
    this.closedActive--;
    if (this.closedActive === 0) this.end();
  }

  /** Open loop: start every request whose due time (t0 + k/rate) has passed, then sleep until the next is due. */
  private openTick(k: number): void {
    const o = this.cfg.open!;
    const stats = this.openStats!;
    const intervalMs = 1000 / o.rate;
    // Timers fire at ~1 ms granularity, so at high rates several start per
    // tick; lag beyond lateThresholdMs is counted.
    const now = performance.now();
    let stop = false;
    while (!this.hardStopped) {
      const due = this.t0 + k * intervalMs;
      if (due > now) break;
      if (due - this.t0 >= this.cfg.durationMs) {
        requestStop(this.ctl, STOP_DURATION);
        stop = true;
        break;
      }
      if (!this.mayStart(now)) {
        stop = true;
        break;
      }
      k++;
      stats.scheduled++;
      if (this.inFlight >= o.maxInFlight) {
        // Not started at all (it would only have been late): counted, so the
        // offered rate the table reports is the one really offered. It counts
        // against `requests` like a started one (mayStart counted it).
        stats.missed++;
        continue;
      }
      const lag = now - due;
      if (lag > o.lateThresholdMs) stats.late++;
      if (lag > stats.maxStartLagMs) stats.maxStartLagMs = lag;
      stats.started++;
      let s = this.free.pop();
      if (!s) {
        s = newSlot(this);
        this.slots.push(s);
      }
      this.begin(s);
      if (this.inFlight > stats.maxInFlightSeen) stats.maxInFlightSeen = this.inFlight;
    }
    if (stop || this.hardStopped) {
      this.openDone = true;
      if (this.inFlight === 0) this.end();
      return;
    }
    this.openTimer = setTimeout(() => this.openTick(k), Math.max(0, this.t0 + k * intervalMs - performance.now()));
  }

  /** One request on a fresh connection. */
  private begin(s: Slot): void {
    s.busy = true;
    s.connected = false;
    s.len = 0;
    this.inFlight++;
    this.ctl[this.inFlightAt] = this.inFlight;
    const cfg = this.cfg;
    s.t0 = performance.now();
    const b = this.b;
    if (b === null) {
      const sock = connect({
        host: cfg.host,
        port: cfg.port,
        ...(cfg.localAddress ? { localAddress: cfg.localAddress } : {}),
        onread: { buffer: this.readBuf, callback: s.onSockData },
      });
      s.sock = sock;
      sock.on('connect', s.onSockConnect);
      sock.on('end', s.onSockEnd);
      sock.on('error', s.onSockError);
      sock.on('close', s.onSockClose);
      return;
    }
    const h = new b.TCP(b.SOCKET);
    s.handle = h;
    h.onread = s.onRead;
    h.useUserBuffer(this.readBuf);
    let err = 0;
    if (cfg.localAddress) err = cfg.family === 4 ? h.bind(cfg.localAddress, 0) : h.bind6(cfg.localAddress, 0, 0);
    if (err === 0) {
      const req = new b.TCPConnectWrap();
      req.oncomplete = s.onConnect;
      err = cfg.family === 4 ? h.connect(req, cfg.host, cfg.port) : h.connect6(req, cfg.host, cfg.port);
    }
    if (err !== 0) {
      // Failed before any I/O (EADDRNOTAVAIL...): finish on the next turn of
      // the loop, not from inside begin, so a loop of instant failures yields.
      const code = errName(err);
      setImmediate(() => {
        if (s.handle === h) this.failed(s, code);
      });
    }
  }

  // ------------------------------------------------------------ events (from Slot's callbacks)

  connected(s: Slot, status: number): void {
    if (status < 0) {
      this.failed(s, errName(status));
      return;
    }
    s.connected = true;
    const h = s.handle!;
    const b = this.b!;
    let err = h.readStart();
    if (err === 0) {
      const w = new b.WriteWrap();
      w.handle = h;
      w.oncomplete = s.onWrite;
      w.async = false;
      w.buffer = null;
      err = h.writeBuffer(w, this.payload);
      // keep the bytes alive until an asynchronous write completes
      if (err === 0 && b.state[b.kLastWriteWasAsync] !== 0) w.buffer = this.payload;
    }
    if (err !== 0) this.failed(s, errName(err));
  }

  /** n bytes in readBuf (or the socket transport's onread buffer), UV_EOF, or an error status. */
  read(s: Slot, n: number): void {
    if (n > 0) {
      const len = s.len + n;
      if (len > MAX_RESPONSE_BYTES) {
        this.finish(s, OUTCOME_BAD_RESPONSE, 'too-large');
        return;
      }
      if (len > s.acc.length) {
        const bigger = Buffer.allocUnsafe(Math.min(MAX_RESPONSE_BYTES, Math.max(len, 2 * s.acc.length)));
        s.acc.copy(bigger, 0, 0, s.len);
        s.acc = bigger;
      }
      const from = this.readBuf;
      const to = s.acc;
      // A response is a few hundred bytes: a loop beats Buffer.copy, which
      // makes a view of the source on every call.
      if (n <= 1024) for (let i = 0, j = s.len; i < n; i++, j++) to[j] = from[i]!;
      else from.copy(to, s.len, 0, n);
      s.len = len;
      return;
    }
    if (n === UV_EOF) {
      const problem = responseProblem(s.acc, s.len, this.expect);
      if (problem === null) this.finish(s, OUTCOME_OK, null);
      else this.finish(s, OUTCOME_BAD_RESPONSE, problem);
      return;
    }
    if (n < 0) this.failed(s, errName(n));
  }

  failed(s: Slot, code: string): void {
    const outcome = errorOutcome(code);
    // A RST that arrives after the full, correct response (some servers reset
    // on close when unread data remains) did not cost the user anything: count
    // it as ok, but keep a note so it is visible.
    if (outcome === OUTCOME_RESET && s.len > 0 && responseProblem(s.acc, s.len, this.expect) === null) {
      this.finish(s, OUTCOME_OK, 'reset-after-response');
    } else {
      this.finish(s, outcome, code);
    }
  }

  /** Record the request's outcome, close its connection, and go on. */
  finish(s: Slot, outcome: number, tag: string | null): void {
    if (!s.busy) return;
    const end = performance.now();
    s.busy = false;
    this.close(s);
    this.inFlight--;
    this.ctl[this.inFlightAt] = this.inFlight;
    this.sink.record(s.t0 - this.t0, end - s.t0, outcome, tag === null ? -1 : this.tagId(tag));
    if (!this.running) return;
    if (this.cfg.mode === 'closed') this.next(s, end);
    else {
      this.free.push(s);
      if (this.openDone && this.inFlight === 0) this.end();
    }
  }

  private close(s: Slot): void {
    if (s.handle !== null) {
      const h = s.handle;
      s.handle = null;
      h.close();
    } else if (s.sock !== null) {
      const sock = s.sock;
      s.sock = null;
      sock.destroy();
    }
  }

  /** The timer wheel, one turn: requests past their timeout end as timeouts. */
  private scan(): void {
    const now = performance.now();
    const limit = this.cfg.timeoutMs;
    const slots = this.slots;
    for (let i = 0; i < slots.length; i++) {
      const s = slots[i]!;
      if (s.busy && now - s.t0 >= limit) this.finish(s, OUTCOME_TIMEOUT, s.connected ? 'timeout-response' : 'timeout-connect');
    }
    this.sink.tick?.(now);
  }

  private end(): void {
    if (!this.running) return;
    this.running = false;
    clearInterval(this.scanTimer);
    clearTimeout(this.openTimer);
    const done = this.onDone;
    this.onDone = null;
    done?.();
  }
}
