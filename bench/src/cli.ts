// `synhold bench ...`: the command's entry. The core CLI (src/cli/main.ts) loads
// this module when the bench package is there (a checkout of the repository),
// and says how to get it otherwise.
//
// stdout: the tables (or, with --json, exactly one JSON document);
// stderr: progress (a bar on a terminal, plain lines otherwise) and the paths
// of the files written.
//
// Interrupts: the first SIGINT/SIGTERM stops the strategy running on the host
// (its worker kills its servers by PID, the namespace is emptied and deleted)
// and the bench exits 130; during the kernel lab it exits at once, and the
// lab's exit hook kills User-Mode Linux by PID (its namespaces die with it).

// Everything is imported lazily: only what the bench runs is loaded.

export async function cmdBench(args: string[], g: { json: boolean; netns?: string }): Promise<number> {
  const { BENCH_USAGE, parseBenchArgs } = await import('./options.js');
  const { ProgressView } = await import('./progress.js');
  const { runBench } = await import('./bench.js');
  if (g.netns) {
    process.stderr.write('synhold bench: bench creates its own network namespaces; --netns does not apply\n');
    return 2;
  }
  const o = parseBenchArgs(args, { json: g.json });
  if (o === 'help') {
    process.stdout.write(`${BENCH_USAGE}\n`);
    return 0;
  }
  const progress = new ProgressView(process.stderr, Boolean(process.stderr.isTTY));
  const ac = new AbortController();
  let inLab = false;
  const onSignal = (sig: NodeJS.Signals): void => {
    progress.close();
    process.stderr.write(`\nsynhold bench: ${sig}: stopping\n`);
    if (inLab || ac.signal.aborted) process.exit(130);
    ac.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    const r = await runBench(o, { progress, signal: ac.signal, onLab: (running) => (inLab = running) });
    progress.close();
    if (ac.signal.aborted) return 130;
    if (o.json) process.stdout.write(`${JSON.stringify(r.json)}\n`);
    else process.stdout.write(r.text.endsWith('\n') ? r.text : `${r.text}\n`);
    process.stderr.write(`synhold bench: written ${Object.values(r.written.files).join(' ')}\n`);
    return r.exitCode;
  } catch (e) {
    progress.close();
    if (ac.signal.aborted) return 130;
    throw e;
  } finally {
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
  }
}
