/**
 * protect's side of the daemon (daemon.ts): one connection per hold. Used when
 * a daemon answers on the namespace's socket; otherwise protect forks a holder.
 */
import { existsSync } from 'node:fs';
import { SynholdError } from '../model/errors.js';
import { daemonSocketPath } from './daemon.js';
import type { Held, Released } from './hold-session.js';
import type { HoldHandle } from './holder.js';
import { StateStore } from './state.js';
import { connectUnix, onJsonLines } from './unix-json.js';

type Msg = Held | Released | { type: 'error'; code: string; message: string } | { type: 'idle' } | { type: 'pong'; pid: number };

/** Asks the namespace's daemon to hold; undefined when no daemon runs (then fork a holder). */
export async function holdViaDaemon(netns: string | undefined, args: { maxHoldMs: number; lockWaitMs: number }): Promise<HoldHandle | undefined> {
  const path = daemonSocketPath(StateStore.for(netns));
  if (!existsSync(path)) return undefined;
  const sock = await connectUnix(path, 200);
  if (!sock) return undefined;
  const waiters: ((m: Msg) => void)[] = [];
  let releasedInfo: Released | undefined;
  onJsonLines<Msg>(sock, (m) => {
    if (m.type === 'released') releasedInfo = m;
    waiters.forEach((w) => w(m));
  });
  const gone = new Promise<void>((resolve) => sock.once('close', () => resolve()));
  sock.on('error', () => undefined);
  const next = <T extends 'held' | 'released'>(type: T): Promise<Extract<Msg, { type: T }>> =>
    new Promise((resolve, reject) => {
      waiters.push((m) => {
        if (m.type === type) resolve(m as Extract<Msg, { type: T }>);
        else if (m.type === 'error') reject(new SynholdError(m.code, m.message));
      });
      void gone.then(() => reject(new SynholdError('ERR_HOLDER_DIED', `the synhold daemon went away before it ${type === 'held' ? 'held' : 'released'}`)));
    });
  const held = next('held');
  held.catch(() => undefined);
  sock.write(`${JSON.stringify({ op: 'hold', maxHoldMs: args.maxHoldMs, lockWaitMs: args.lockWaitMs, ownerPid: process.pid })}\n`);
  return {
    kind: 'daemon',
    held,
    gone,
    release(reason) {
      const done = releasedInfo ? Promise.resolve(releasedInfo) : next('released');
      sock.write(`${JSON.stringify({ op: 'release', reason })}\n`);
      return done.finally(() => sock.end());
    },
    get releasedInfo() {
      return releasedInfo;
    },
  };
}

/** `synhold release` for a hold the daemon owns: ask it to let go (never kill it). */
export async function releaseViaDaemon(netns: string | undefined, reason: string): Promise<Released | undefined> {
  const sock = await connectUnix(daemonSocketPath(StateStore.for(netns)), 500);
  if (!sock) return undefined;
  return new Promise((resolve, reject) => {
    onJsonLines<Msg>(sock, (m) => {
      sock.end();
      if (m.type === 'released') resolve(m);
      else if (m.type === 'idle') resolve(undefined);
      else if (m.type === 'error') reject(new SynholdError(m.code, m.message));
    });
    sock.once('close', () => resolve(undefined));
    sock.write(`${JSON.stringify({ op: 'release-current', reason })}\n`);
  });
}
