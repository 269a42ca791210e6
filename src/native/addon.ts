/**
 * Typed face of the native addon (native/*.c). Nothing else in synhold loads
 * the .node file; everything above this goes through NetlinkSocket or FileLock.
 */
import { nativeBinary } from './binary.js';

export interface NativeSocketHandle {
  readonly portId: number;
  readonly fd: number;
}

export interface NativeAddon {
  open(protocol: number, netnsPath: string | null, rcvbuf: number): NativeSocketHandle;
  send(handle: NativeSocketHandle, data: Buffer): number;
  recv(handle: NativeSocketHandle): Buffer | null;
  watch(handle: NativeSocketHandle, onReadable: (status: number) => void): void;
  setRef(handle: NativeSocketHandle, ref: boolean): void;
  setsockopt(handle: NativeSocketHandle, level: number, name: number, value: number): void;
  close(handle: NativeSocketHandle): void;
  /** A connected, non-blocking unix stream socket (watch/setRef/close apply); null: nobody listens there. */
  connectUnix(path: string, timeoutMs: number): NativeSocketHandle | null;
  /** Sends all of data or throws. */
  streamSend(handle: NativeSocketHandle, data: Buffer): number;
  /** What arrived; an empty Buffer at end of stream; null when nothing is waiting. */
  streamRecv(handle: NativeSocketHandle): Buffer | null;
  /** SO_NETNS_COOKIE of a namespace (null: kernel before 5.14). */
  netnsCookie(netnsPath: string | null): string | null;
  tryLock(path: string): number;
  /** A /proc/thread-self/net/... file as another network namespace shows it. */
  readFileInNetns(netnsPath: string, path: string): string;
  unlock(fd: number): void;
  /** Whether another descriptor holds an exclusive flock on path (false: no such file). */
  isLocked(path: string): boolean;
  /** Starts file (PATH-searched) with argv; child fd i = our fds[i]; see native/spawn.c. Returns the pid. */
  spawn(
    file: string,
    argv: string[],
    fds: number[],
    netnsPath: string | null,
    newSession: boolean,
    onExit: (code: number | null, signal: number | null) => void,
    /** Signal numbers left blocked in the child across exec. */
    blocked?: number[],
  ): number;
  /** A close-on-exec pipe: [read end, write end]. */
  pipe(): [number, number];
  /** Whether a child started by spawn keeps the event loop alive (it does at first). */
  setChildRef(pid: number, ref: boolean): void;
  /** The calling thread's scheduling: [policy without the flag, priority, SCHED_RESET_ON_FORK]. */
  getScheduler(): [number, number, boolean];
  /** sched_setscheduler(0, policy | (resetOnFork ? SCHED_RESET_ON_FORK : 0), priority): the calling thread only. */
  setScheduler(policy: number, priority: number, resetOnFork: boolean): void;
  /** A 64-bit checksum of the bytes (damage detection, not cryptographic; native/checksum.c). */
  checksum64(data: Buffer): bigint;
  /**
   * On the SO_REUSEPORT group of process `pid`'s socket `fd` (reached with pidfd_getfd): attach a
   * program sending every new connection to the group's socket number `index` (0: the first, the
   * oldest), or with -1 detach the group's program (a group without one: nothing done).
   * native/reuseport.c.
   */
  reuseportSteer(pid: number, fd: number, index: number): void;
}

/** Errors thrown by the addon carry the positive errno and the failing step. */
export interface NativeError extends Error {
  errno: number;
  syscall: string;
}

export function isNativeError(e: unknown): e is NativeError {
  return e instanceof Error && typeof (e as Partial<NativeError>).errno === 'number';
}

let cached: NativeAddon | undefined;

/** Loads build/Release/synhold_native.node from the package root (see host/package-root.ts). */
export function native(): NativeAddon {
  if (cached) return cached;
  const found = nativeBinary('synhold_native.node');
  // process.dlopen, not require(): the same in the ESM library and the CommonJS bundle, and no node:module to load.
  const m = { exports: {} as NativeAddon };
  process.dlopen(m, found);
  cached = m.exports;
  return cached;
}
