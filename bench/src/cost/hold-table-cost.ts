/**
 * What `setup --steering while-holding` costs per reload instead of per packet: the nf_tables
 * transaction that adds a hold's tables (before CMD) and the one that deletes them (after the
 * release), timed in-process, in a throwaway network namespace, one after the other.
 *
 *   node dist/bench/src/cost/hold-table-cost.js [--cycles N] [--json]
 *
 * The namespace (synhold-bench-PID-tables-*) is removed at the end.
 */
import { addHoldTableBatch, deleteHoldTableBatch, holdFamilies } from '../../../src/netfilter/hold-table.js';
import { NETLINK_NETFILTER, NetlinkSocket } from '../../../src/netlink/socket.js';
import type { SynMatch } from '../../../src/model/syn-match.js';
import { addNetns, benchNetnsName, deleteNetns } from '../netns.js';

const QUEUE = 7001;
const MATCHES: SynMatch[] = [
  { family: 4, port: 8080 },
  { family: 6, port: 8080 },
];

const quantile = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))]!;

async function main(): Promise<number> {
  const args = process.argv.slice(2);
  const cycles = args.includes('--cycles') ? Number(args[args.indexOf('--cycles') + 1]) : 200;
  if (!Number.isInteger(cycles) || cycles < 1 || cycles > 100_000) {
    process.stderr.write('hold-table-cost: --cycles 1..100000\n');
    return 2;
  }
  const netns = benchNetnsName('tables');
  await addNetns(netns);
  const sock = NetlinkSocket.open(NETLINK_NETFILTER, { netns });
  const add: number[] = [];
  const del: number[] = [];
  try {
    for (let i = 0; i < cycles; i++) {
      let t = process.hrtime.bigint();
      await sock.batch(addHoldTableBatch(QUEUE, MATCHES), { op: 'add hold tables' });
      add.push(Number(process.hrtime.bigint() - t) / 1e6);
      t = process.hrtime.bigint();
      await sock.batch(deleteHoldTableBatch(QUEUE, holdFamilies(MATCHES)), { op: 'delete hold tables' });
      del.push(Number(process.hrtime.bigint() - t) / 1e6);
    }
  } finally {
    sock.close();
    await deleteNetns(netns);
  }
  const row = (xs: number[]) => ({ p50: quantile(xs, 0.5), p99: quantile(xs, 0.99), max: Math.max(...xs) });
  const r = { cycles, families: 2, add: row(add), delete: row(del) };
  if (args.includes('--json')) process.stdout.write(`${JSON.stringify(r)}\n`);
  else {
    const f = (x: { p50: number; p99: number; max: number }) => `p50 ${x.p50.toFixed(3)} p99 ${x.p99.toFixed(3)} max ${x.max.toFixed(3)} ms`;
    process.stdout.write(`${cycles} cycles, tables for IPv4 and IPv6: add ${f(r.add)}; delete ${f(r.delete)}\n`);
  }
  return 0;
}

main().then(
  (code) => process.stdout.write('', () => process.exit(code)),
  (e: unknown) => {
    process.stderr.write(`hold-table-cost: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exit(1);
  },
);
