/** Renders plug-roundtrip.ts's JSON as docs/BENCH-PLUG.md (regenerated, never typed by hand). */
import { readFileSync, writeFileSync } from 'node:fs';

interface Doc {
  kernel: string;
  date: string;
  results: { method: string; iterations: number; roundTripUs: Record<'p50' | 'p90' | 'p99' | 'max' | 'mean', number> }[];
}

const [input, output] = process.argv.slice(2);
if (!input || !output) {
  process.stderr.write('usage: plug-roundtrip-report IN.json OUT.md\n');
  process.exit(2);
}
const doc = JSON.parse(readFileSync(input, 'utf8')) as Doc;
const ms = (us: number) => (us >= 1000 ? `${(us / 1000).toFixed(1)} ms` : `${us.toFixed(0)} µs`);
const base = doc.results[0]!.roundTripUs.p50;
const rows = doc.results.map(
  (r) =>
    `| ${r.method} | ${r.iterations} | ${ms(r.roundTripUs.p50)} | ${ms(r.roundTripUs.p90)} | ${ms(r.roundTripUs.p99)} | ${ms(r.roundTripUs.max)} | ${r.iterations ? `${(r.roundTripUs.p50 / base).toFixed(0)}x` : '-'} |`,
);
const md = `# Plug + release round trip: in-process netlink vs spawning tools

One \`plug\` (TCQ_PLUG_BUFFER) followed by one \`release\` (TCQ_PLUG_RELEASE_INDEFINITE) on a plug
qdisc that carries no traffic, so only the control path is measured. Every reload synhold protects
pays one of these; every held connection waits at least for the release half.

Measured in the kernel lab (User-Mode Linux ${doc.kernel}, one CPU, slow system calls: compare
the rows with each other, not with the host), ${doc.date}.

| method | runs | p50 | p90 | p99 | max | p50 vs in-process |
|---|---|---|---|---|---|---|
${rows.join('\n')}

- in-process: \`Plug.buffer()\` and \`Plug.releaseIndefinite()\`, one RTM_NEWQDISC request each on an
  open netlink socket (src/plug/plug.ts).
- tc: \`tc qdisc change dev D root handle 1: plug block\` then \`... release_indefinite\` (iproute2).
- nl-qdisc-add: \`nl-qdisc-add --dev=D --parent=root --id=1: --update plug --buffer\` then
  \`--release-indefinite\`, with \`LD_PRELOAD=.../libnl-3/cli/qdisc/plug.so\` (Debian's packaging puts the
  plug module where the tool does not look; KERNEL.md).
- All three run in one scratch network namespace, on an IFB device created for the run; the benchmark
  process itself runs inside that namespace, so each tool is spawned directly.

Reproduce: \`scripts/bench-plug.sh\` (runs \`ip netns exec b node dist/bench/src/plug-roundtrip.js\` inside
\`scripts/lab\` and regenerates this file). Iterations: N_INPROCESS (default 2000) and N_SPAWN (default 100).
`;
writeFileSync(output, md);
