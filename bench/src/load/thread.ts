// A load generator engine in a worker thread (started by runLoad, loadgen.ts).
//
//   parent -> worker   { t: 'go', t0 }       start (t0 on the monotonic clock)
//                      { t: 'abort' }        the hard deadline: close everything
//   worker -> parent   { t: 'ready' }
//                      RecordBatch           finished requests, in typed arrays
//                      { t: 'done', aborted, open? }
//
// Records travel in batches (at most BATCH requests, at least every FLUSH_MS),
// in one Float64Array whose buffer is transferred, not copied: the parent
// thread, which also runs the bench's reload loop, handles a few messages a
// second, not one per request.

import { parentPort, workerData } from 'node:worker_threads';
import { performance } from 'node:perf_hooks';
import { Engine, monoOffset, type EngineConfig, type OpenLoopStats, type RecordSink } from './engine.js';
import { recordCode, type RecordBatch } from './batch.js';

export interface ThreadData {
  cfg: EngineConfig;
  ctl: Int32Array;
}

export type FromThread = { t: 'ready' } | RecordBatch | { t: 'done'; aborted: number; open?: OpenLoopStats };
export type ToThread = { t: 'go'; t0: number } | { t: 'abort' };

const BATCH = 8192;
const FLUSH_MS = 100;

class BatchSink implements RecordSink {
  private n = 0;
  private readonly data = new Float64Array(3 * BATCH);
  private tagsSent = 0;
  private lastFlush = performance.now();
  engine: Engine | undefined;

  constructor(private readonly port: NonNullable<typeof parentPort>) {}

  record(startMs: number, latencyMs: number, outcome: number, tag: number): void {
    const i = 3 * this.n++;
    this.data[i] = startMs;
    this.data[i + 1] = latencyMs;
    this.data[i + 2] = recordCode(outcome, tag);
    if (this.n === BATCH) this.flush();
  }

  tick(now: number): void {
    if (now - this.lastFlush >= FLUSH_MS) this.flush();
  }

  flush(): void {
    this.lastFlush = performance.now();
    const n = this.n;
    if (n === 0) return;
    this.n = 0;
    const tags = this.engine!.tags;
    // a copy of the filled part, whose buffer is then moved, not copied again
    const data = this.data.slice(0, 3 * n);
    const batch: RecordBatch = { t: 'records', n, data, newTags: tags.slice(this.tagsSent) };
    this.tagsSent = tags.length;
    this.port.postMessage(batch, [data.buffer]);
  }
}

function main(): void {
  const port = parentPort;
  if (!port) throw new Error('load/thread.js runs as a worker thread of runLoad');
  const { cfg, ctl } = workerData as ThreadData;
  const offset = monoOffset();
  const sink = new BatchSink(port);
  const engine = new Engine(cfg, ctl, sink);
  sink.engine = engine;
  let finished = false;
  const done = (aborted: number): void => {
    if (finished) return;
    finished = true;
    sink.flush();
    const msg: FromThread = { t: 'done', aborted, ...(engine.openStats ? { open: engine.openStats } : {}) };
    port.postMessage(msg);
    port.close();
  };
  port.on('message', (m: ToThread) => {
    if (m.t === 'go') engine.start(m.t0, offset, () => done(0));
    else if (m.t === 'abort') {
      const n = engine.abort();
      done(n);
    }
  });
  port.postMessage({ t: 'ready' } satisfies FromThread);
}

main();
