// Entry point of one strategy's run, started by the bench inside the network
// namespace it made for that strategy:
//
//   ip netns exec synhold-bench-... node dist/bench/src/worker.js SPEC.json
//
// Writes the WorkerResult to spec.resultFile and exits 0 (a strategy that
// failed or was skipped is a result, not a crash); exits 1 only if it could
// not even write that. SIGTERM/SIGINT end it through process.exit, so
// servers.ts's exit hook still kills every server it started, by PID.

import { installSignalCleanup } from './servers.js';
import { runStrategy } from './run-strategy.js';
import { readJsonFile, writeJsonFile, type WorkerSpec } from './protocol.js';

async function main(): Promise<number> {
  const specPath = process.argv[2];
  const spec = specPath ? readJsonFile<WorkerSpec>(specPath) : undefined;
  if (!spec) {
    process.stderr.write(`bench worker: cannot read the spec file ${specPath ?? '(none given)'}\n`);
    return 1;
  }
  installSignalCleanup();
  const r = await runStrategy(spec);
  writeJsonFile(spec.resultFile, r);
  process.stderr.write(`bench worker: ${spec.strategy} ${r.skipped ? `skipped: ${r.skipped}` : r.error ? `error: ${r.error}` : 'done'}\n`);
  return 0;
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    process.stderr.write(`bench worker: ${e instanceof Error ? e.stack : String(e)}\n`);
    process.exit(1);
  },
);
