/**
 * What the load experiments (master-worker-experiment, reload-experiment, systemd-experiment)
 * share: the load they put on the server, and the way they run as a script in the namespace
 * under test (a JSON argument in, one JSON document out), so that the three cannot drift apart.
 */
import { basename } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runLoad } from '../../bench/src/loadgen.js';

/**
 * The experiments' load: the project's generator, closed loop, against 127.0.0.1:port, until
 * `endsAt` (wall clock; at least 1 s) or until `signal` aborts it. Each request is bounded by
 * requestTimeoutMs (default 10 s) and the whole run by graceMs (default 10 s) past endsAt, so a
 * request stuck in a reload is counted, never waited for forever.
 */
export function closedLoad(o: {
  port: number;
  concurrency: number;
  endsAt: number;
  graceMs?: number;
  requestTimeoutMs?: number;
  signal: AbortSignal;
}): ReturnType<typeof runLoad> {
  const left = o.endsAt - Date.now();
  return runLoad({
    host: '127.0.0.1',
    port: o.port,
    mode: 'closed',
    concurrency: o.concurrency,
    durationMs: Math.max(1000, left),
    deadlineMs: Math.max(2000, left + (o.graceMs ?? 10_000)),
    requestTimeoutMs: o.requestTimeoutMs ?? 10_000,
    signal: o.signal,
  });
}

/**
 * When the module at `moduleUrl` (its import.meta.url) is the program node runs: `run` with the
 * JSON of argv[2] (`{}` if none), its result as one JSON line on stdout and exit 0; on an error its
 * stack on stderr, prefixed with the script's name, and exit 1. Imported (by a test), nothing.
 */
export function runAsScript<O, R>(moduleUrl: string, run: (o: O) => Promise<R>): void {
  const file = basename(fileURLToPath(moduleUrl));
  if (!process.argv[1]?.endsWith(file)) return;
  run(JSON.parse(process.argv[2] ?? '{}') as O).then(
    (r) => {
      // Exit from write's callback: a pipe whose reader is slow (a busy CI machine) takes the line in
      // pieces, and process.exit right after write cut one study's 219 KB result short (CI, stop 19).
      process.stdout.write(`${JSON.stringify(r)}\n`, () => process.exit(0));
    },
    (e: unknown) => {
      process.stderr.write(`${file.replace(/\.js$/, '')}: ${(e as Error).stack}\n`);
      process.exit(1);
    },
  );
}
