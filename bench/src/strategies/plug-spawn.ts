// `plug-spawn`: the seed's own tooling, as its blog post ran it. The topology is
// set up with `tc` and libnl's `nl-qdisc-add`:
//
//   tc qdisc add dev lo root handle 1: prio bands 4
//   tc qdisc add dev lo parent 1:1 handle 10: pfifo limit 1000     (and 1:2, 1:3)
//   nl-qdisc-add --dev=lo --parent=1:4 --id=40: plug --limit 33554432
//   nl-qdisc-add --dev=lo --parent=1:4 --id=40: --update plug --release-indefinite
//   tc filter add dev lo parent 1:0 protocol ip prio 1 u32 <SYN to 16000> flowid 1:4
//
// and every reload is wrapped the way its script did it, one process per step:
//
//   nl-qdisc-add ... --update plug --buffer; haproxy ... -sf ...; nl-qdisc-add ... --update plug --release-indefinite
//
// so the cost of spawning processes on the hold path shows next to `plug`
// (in-process netlink, release on the socket change). The seed steered SYNs
// with an iptables mark from a link-local source and a fw filter; here a u32
// filter matches "SYN without ACK to the port" directly (KERNEL.md), so the
// clients need no special source address and both strategies hold the same
// packets.
//
// Debian ships the plug module for nl-qdisc-add where the tool does not look
// for it (KERNEL.md): LD_PRELOAD makes it load.

import { existsSync } from 'node:fs';
import { exec, execOk, describeFailure } from '../exec.js';
import { stats } from '../reloader.js';
import { StrategyUnavailable, type Strategy, type StrategyContext } from './strategy.js';

export const NL_QDISC_ADD = '/usr/bin/nl-qdisc-add';
export const NL_PLUG_SO = '/usr/lib/x86_64-linux-gnu/libnl-3/cli/qdisc/plug.so';
/** The seed's plug limit (bytes). */
export const SEED_PLUG_LIMIT = 33554432;

const PLUG = ['--dev=lo', '--parent=1:4', '--id=40:'];

/** The set-up commands, in order (argv lists; nl-qdisc-add ones need LD_PRELOAD). */
export function seedSetupCommands(port: number): string[][] {
  return [
    ['tc', 'qdisc', 'add', 'dev', 'lo', 'root', 'handle', '1:', 'prio', 'bands', '4'],
    ['tc', 'qdisc', 'add', 'dev', 'lo', 'parent', '1:1', 'handle', '10:', 'pfifo', 'limit', '1000'],
    ['tc', 'qdisc', 'add', 'dev', 'lo', 'parent', '1:2', 'handle', '20:', 'pfifo', 'limit', '1000'],
    ['tc', 'qdisc', 'add', 'dev', 'lo', 'parent', '1:3', 'handle', '30:', 'pfifo', 'limit', '1000'],
    [NL_QDISC_ADD, ...PLUG, 'plug', `--limit=${SEED_PLUG_LIMIT}`],
    // A new plug starts plugged (KERNEL.md): release it before any traffic.
    [NL_QDISC_ADD, ...PLUG, '--update', 'plug', '--release-indefinite'],
    // IPv4 TCP, IHL 5, dport, flags & (SYN|ACK) == SYN
    [
      'tc',
      'filter',
      'add',
      'dev',
      'lo',
      'parent',
      '1:0',
      'protocol',
      'ip',
      'prio',
      '1',
      'u32',
      'match',
      'ip',
      'protocol',
      '6',
      '0xff',
      'match',
      'u8',
      '0x05',
      '0x0f',
      'at',
      '0',
      'match',
      'ip',
      'dport',
      String(port),
      '0xffff',
      'match',
      'u8',
      '0x02',
      '0x12',
      'at',
      '33',
      'flowid',
      '1:4',
    ],
  ];
}

export const PLUG_BUFFER = [NL_QDISC_ADD, ...PLUG, '--update', 'plug', '--buffer'];
export const PLUG_RELEASE = [NL_QDISC_ADD, ...PLUG, '--update', 'plug', '--release-indefinite'];

function nlEnv(ctx: StrategyContext): NodeJS.ProcessEnv {
  return { ...ctx.env, LD_PRELOAD: NL_PLUG_SO };
}

export const plugSpawn: Strategy = {
  name: 'plug-spawn',
  summary: "the seed's tooling: tc prio + plug, `nl-qdisc-add --buffer` / `--release-indefinite` spawned around each reload",
  haproxyMode: 'sf',
  reloads: true,
  kernelNeeds: ['sch_plug', 'sch_prio'],
  prepare: async (ctx) => {
    if (!existsSync(NL_QDISC_ADD)) throw new StrategyUnavailable(`${NL_QDISC_ADD} not found: install the Debian package libnl-utils`);
    if (!existsSync(NL_PLUG_SO)) throw new StrategyUnavailable(`${NL_PLUG_SO} not found (libnl-utils' plug module)`);
    const cleanup = async (): Promise<void> => {
      // Release before deleting: deleting a plug drops what it holds.
      await exec(PLUG_RELEASE, { env: nlEnv(ctx), timeoutMs: 10_000 });
      await exec(['tc', 'qdisc', 'del', 'dev', 'lo', 'root'], { env: ctx.env, timeoutMs: 10_000 });
    };
    for (const argv of seedSetupCommands(ctx.port)) {
      const r = await exec(argv, { env: argv[0] === NL_QDISC_ADD ? nlEnv(ctx) : ctx.env, timeoutMs: 20_000 });
      if (r.code !== 0) {
        await cleanup();
        if (/kind is unknown|Unknown qdisc|Object not found/i.test(r.stderr)) {
          throw new StrategyUnavailable(`this kernel lacks ${argv.includes('prio') ? 'sch_prio' : 'sch_plug'}: ${describeFailure(r)}`);
        }
        throw new StrategyUnavailable(`seed topology set-up failed: ${describeFailure(r)}`);
      }
    }
    return {
      wrap: {
        before: async () => {
          await execOk(PLUG_BUFFER, { env: nlEnv(ctx), timeoutMs: 10_000 });
        },
        after: async () => {
          await execOk(PLUG_RELEASE, { env: nlEnv(ctx), timeoutMs: 10_000 });
        },
      },
      // Held from the moment `--buffer` returned to the moment
      // `--release-indefinite` returned (the loop's hook timings).
      holds: (run) => ({
        ms: stats(run.loop.reloads.filter((r) => r.beforeMs !== undefined).map((r) => r.holdMs - (r.beforeMs ?? 0))),
        source: '`nl-qdisc-add --buffer` returned to `--release-indefinite` returned',
      }),
      cleanup,
      notes: ['seed topology: prio bands 4, pfifo 1:1-1:3, plug 40: on 1:4 (nl-qdisc-add), u32 SYN filter to 1:4'],
    };
  },
};
