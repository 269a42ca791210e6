/**
 * How long one plug + release takes, three ways, in the same kernel:
 *
 *   in-process  synhold's Plug.buffer() then Plug.releaseIndefinite() (one netlink request each)
 *   tc          spawn `tc qdisc change ... plug block`, then `... release_indefinite`
 *   nl-qdisc-add  spawn libnl's tool, as the seed's blog post did (with the LD_PRELOAD
 *               its Debian packaging needs, KERNEL.md)
 *
 * The hold a client sees is at least one release's latency, and a reload is
 * wrapped in a plug and a release, so this is the per-reload price of the tool.
 * It works in the current network namespace, on a throwaway IFB device it
 * creates there, and spawns every tool directly (no `ip netns exec` in the
 * measured path). Run it where sch_plug exists, in a scratch namespace:
 * scripts/bench-plug.sh does that in the kernel lab and writes docs/BENCH-PLUG.md.
 * Prints one JSON document.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { release as kernelRelease } from 'node:os';
import { Rtnl } from '../../src/rtnl/rtnl.js';
import { addIfb, deleteLink, setLinkUp } from '../../src/rtnl/link.js';
import { Plug } from '../../src/plug/plug.js';
import { TC_H_ROOT, makeHandle } from '../../src/rtnl/tc/handle.js';

const NL_PLUG_SO = '/usr/lib/x86_64-linux-gnu/libnl-3/cli/qdisc/plug.so';

interface Series {
  method: string;
  iterations: number;
  /** One plug + one release, microseconds. */
  roundTripUs: { p50: number; p90: number; p99: number; max: number; mean: number };
}

function summarize(method: string, us: number[]): Series {
  const s = [...us].sort((a, b) => a - b);
  const q = (p: number) => s[Math.min(s.length - 1, Math.floor(p * s.length))]!;
  const r = (x: number) => Math.round(x * 10) / 10;
  return {
    method,
    iterations: s.length,
    roundTripUs: { p50: r(q(0.5)), p90: r(q(0.9)), p99: r(q(0.99)), max: r(s.at(-1)!), mean: r(s.reduce((a, b) => a + b, 0) / s.length) },
  };
}

function spawnRoundTrip(argvPlug: string[], argvRelease: string[], env: NodeJS.ProcessEnv = process.env): number {
  const t0 = process.hrtime.bigint();
  for (const argv of [argvPlug, argvRelease]) {
    const r = spawnSync(argv[0]!, argv.slice(1), { env });
    if (r.status !== 0) throw new Error(`${argv.join(' ')} failed: ${r.stderr}`);
  }
  return Number(process.hrtime.bigint() - t0) / 1000;
}

async function main(): Promise<void> {
  const inProcessN = Number(process.env.N_INPROCESS ?? 2000);
  const spawnN = Number(process.env.N_SPAWN ?? 100);
  const rt = Rtnl.open();
  const dev = `shbench${randomBytes(2).toString('hex')}`;
  const results: Series[] = [];
  try {
    // A plug on an IFB device that carries no traffic: the cost measured is the control path only.
    await addIfb(rt, dev);
    await setLinkUp(rt, dev, true);
    const plug = new Plug(rt, { dev, parent: TC_H_ROOT, handle: makeHandle(1, 0) });
    await plug.attach();

    for (let i = 0; i < 200; i++) {
      await plug.buffer();
      await plug.releaseIndefinite();
    }
    const inproc: number[] = [];
    for (let i = 0; i < inProcessN; i++) {
      const t0 = process.hrtime.bigint();
      await plug.buffer();
      await plug.releaseIndefinite();
      inproc.push(Number(process.hrtime.bigint() - t0) / 1000);
    }
    results.push(summarize('in-process netlink (synhold)', inproc));

    const tc = (action: string) => ['tc', 'qdisc', 'change', 'dev', dev, 'root', 'handle', '1:', 'plug', action];
    const tcTimes: number[] = [];
    for (let i = 0; i < spawnN; i++) tcTimes.push(spawnRoundTrip(tc('block'), tc('release_indefinite')));
    results.push(summarize('spawn tc (iproute2)', tcTimes));

    if (existsSync(NL_PLUG_SO) && spawnSync('which', ['nl-qdisc-add']).status === 0) {
      // Debian's libnl-utils looks for its plug module in the wrong directory (KERNEL.md): preload it.
      const nl = (action: string) => ['nl-qdisc-add', `--dev=${dev}`, '--parent=root', '--id=1:', '--update', 'plug', action];
      const env = { ...process.env, LD_PRELOAD: NL_PLUG_SO };
      const nlTimes: number[] = [];
      for (let i = 0; i < spawnN; i++) nlTimes.push(spawnRoundTrip(nl('--buffer'), nl('--release-indefinite'), env));
      results.push(summarize("spawn nl-qdisc-add (libnl, the seed's tool)", nlTimes));
    } else {
      results.push({ method: 'spawn nl-qdisc-add: not installed (libnl-utils)', iterations: 0, roundTripUs: { p50: 0, p90: 0, p99: 0, max: 0, mean: 0 } });
    }
    await plug.releaseIndefinite();
  } finally {
    await deleteLink(rt, dev).catch(() => undefined);
    rt.close();
  }
  process.stdout.write(`${JSON.stringify({ kernel: kernelRelease(), date: new Date().toISOString(), results }, null, 2)}\n`);
}

main().catch((e: unknown) => {
  process.stderr.write(`plug-roundtrip: ${(e as Error).stack}\n`);
  process.exit(1);
});
