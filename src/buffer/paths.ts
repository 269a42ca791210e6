/**
 * Where a buffer keeps its files: `<run dir>/buffer/netns-<cookie>/`, beside,
 * not inside, the namespace's protect state directory (`<run dir>/netns-<cookie>/`,
 * src/protect/state.ts), whose cookie naming it reuses. Not inside, because
 * `synhold teardown` removes that directory whole, and a buffer (which needs no
 * setup) must not lose its control socket to a teardown of protect's steering.
 *
 *   q<N>.lock      flock(2)ed by the owner and its watchdog: one buffer per queue
 *   q<N>.sock      the owner's control socket (`synhold buffer step|list|release`)
 *   q<N>.json      the record: owner, watchdog, filter, rules (removed at release,
 *                  by the watchdog too when it releases)
 *   q<N>.v4.add / .v4.del (and .v6.*)  nfqueue: the iptables-restore files (steering.ts)
 *   q<N>.plug.json  plug: the objects it created (IFB, filters, clsact), kept until
 *                  they are removed, by the owner or by the next start or release
 *   watchdog.log   one line per release a watchdog did on its own
 */
import { mkdirSync, readFileSync, rmSync, writeFileSync, renameSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { stateDir } from '../protect/state.js';
import type { ProcessId } from '../protect/hold/process-id.js';
import type { IpFamily } from '../model/prefix.js';
import type { BufferFilter } from './filter.js';
import type { RuleFiles } from './steering.js';
import type { IptablesBackend } from '../netfilter/iptables.js';
import type { BufferBackend } from './engine.js';

export interface BufferRecord {
  queue: number;
  backend: BufferBackend;
  owner: ProcessId;
  watchdog: ProcessId;
  filter: BufferFilter;
  /** nfqueue: which iptables, and the families with rules. */
  iptables?: IptablesBackend;
  families?: IpFamily[];
  /** Epoch ms. */
  since: number;
  deadline: number;
}

export class BufferPaths implements RuleFiles {
  constructor(
    readonly dir: string,
    readonly queue: number,
  ) {}

  static for(netns: string | undefined, queue: number): BufferPaths {
    const protectDir = stateDir(netns);
    return new BufferPaths(join(dirname(protectDir), 'buffer', basename(protectDir)), queue);
  }

  ensure(): void {
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
  }

  get lock(): string {
    return join(this.dir, `q${this.queue}.lock`);
  }

  get socket(): string {
    return join(this.dir, `q${this.queue}.sock`);
  }

  get record(): string {
    return join(this.dir, `q${this.queue}.json`);
  }

  get journal(): string {
    return join(this.dir, 'watchdog.log');
  }

  add(family: IpFamily): string {
    return join(this.dir, `q${this.queue}.v${family}.add`);
  }

  del(family: IpFamily): string {
    return join(this.dir, `q${this.queue}.v${family}.del`);
  }

  get plugState(): string {
    return join(this.dir, `q${this.queue}.plug.json`);
  }

  readRecord(): BufferRecord | undefined {
    try {
      return JSON.parse(readFileSync(this.record, 'utf8')) as BufferRecord;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw e;
    }
  }

  writeRecord(r: BufferRecord): void {
    const tmp = `${this.record}.${process.pid}.tmp`;
    writeFileSync(tmp, `${JSON.stringify(r, null, 2)}\n`, { mode: 0o600 });
    renameSync(tmp, this.record);
  }

  /** Everything of this queue's but the lock (which must stay the file its holder locked). */
  removeFiles(): void {
    for (const p of [this.record, this.socket, this.add(4), this.del(4), this.add(6), this.del(6)]) rmSync(p, { force: true });
  }
}
