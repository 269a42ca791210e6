/**
 * The plug backend's egress topologies on a kernel without sch_plug, for measuring what they
 * cost while not holding: the same qdiscs, filters and redirect as `synhold setup --backend plug
 * --egress-topology T` builds (src/backends/plug.ts), with a pfifo where the plug would be.
 *
 * Why that measures the real thing: while not holding, a plug is released (release_indefinite),
 * and its enqueue and dequeue are then a FIFO's (sch_plug.c: plug_enqueue appends under the same
 * limit check, plug_dequeue takes the head when unplug_indefinite is set); only SYNs to the
 * protected port reach it at all. Every other packet's path (prio's lock, classification by the
 * two u32 filters, the three pfifo bands; or, with clsact, the egress hook's filter walk) is the
 * same qdisc code with or without sch_plug. Written as iproute2 commands, so that the stand-in is
 * built by the tool an operator would use, and test/bench/plug-stand-in.test.ts checks that its
 * filters' keys are the ones synhold's own u32 encoder makes.
 */
import { DEFAULT_PRIOMAP } from '../../../src/rtnl/tc/sch_prio.js';
import { HOOK_PRIO_V4, HOOK_PRIO_V6, PLUG_MAJOR, PRIO_MAJOR } from '../../../src/backends/plug.js';

/**
 * prio: the seed's topology (`--egress-topology prio`). clsact: the clsact redirect with its filters
 * on lo's hook (`--steering always`). clsact-idle: the hook, the IFB and its queue, no filter.
 * clsact-between-holds: the IFB and its queue only, lo untouched: what the default (`--egress-topology
 * auto` building clsact, `--steering auto` picking while-holding) leaves between holds, since each hold
 * adds the hook and the filters and its release deletes them.
 */
export type StandInTopology = 'prio' | 'clsact' | 'clsact-idle' | 'clsact-between-holds';
export const STAND_IN_TOPOLOGIES: readonly StandInTopology[] = ['prio', 'clsact', 'clsact-idle', 'clsact-between-holds'];

export interface StandIn {
  /** argv lists, run in order in the namespace */
  install: string[][];
  /** argv lists undoing install (each may fail harmlessly when install did not get that far) */
  remove: string[][];
}

const hex = (n: number): string => n.toString(16);
/** The IFB device of the clsact stand-in (synhold names its own synhold-ifbN after the device's index). */
export const STAND_IN_IFB = 'synhold-ifbS';

/** A command line as an operator types it (no quoting needed: no argument has a space). */
const argv = (line: string): string[] => line.split(' ');

/** The u32 matches of synMatchKeys (src/rtnl/tc/cls_u32.ts) for "SYN without ACK to dport `port`", as tc writes them. */
export function synMatchArgs(family: 4 | 6, port: number): string[] {
  return argv(
    family === 4
      ? `match ip protocol 6 0xff match u8 0x05 0x0f at 0 match u16 0 0x1fff at 6 match ip dport ${port} 0xffff match u8 0x02 0x12 at 33`
      : `match ip6 protocol 6 0xff match ip6 dport ${port} 0xffff match u8 0x02 0x12 at 53`,
  );
}

export function standIn(topology: StandInTopology, dev: string, port: number): StandIn {
  const plug = `${hex(PLUG_MAJOR)}:`;
  const prio = `${hex(PRIO_MAJOR)}:`;
  const band = `${hex(PRIO_MAJOR)}:4`;
  // One filter per family, where synhold puts its own and with what it does with a match.
  const filters = (hook: string, prefs: [number, number], then: string) =>
    ([4, 6] as const).map((family, i) => [
      ...argv(`tc filter add dev ${dev} ${hook} protocol ${family === 4 ? 'ip' : 'ipv6'} prio ${prefs[i]} u32`),
      ...synMatchArgs(family, port),
      ...argv(then),
    ]);
  if (topology === 'prio')
    return {
      install: [
        argv(`tc qdisc add dev ${dev} root handle ${prio} prio bands 4 priomap ${DEFAULT_PRIOMAP.join(' ')}`),
        argv(`tc qdisc add dev ${dev} parent ${band} handle ${plug} pfifo limit 10000`),
        ...filters(`parent ${prio}`, [1, 2], `flowid ${band}`),
      ],
      remove: [argv(`tc qdisc del dev ${dev} root`)],
    };
  const ifb = [
    argv(`ip link add ${STAND_IN_IFB} type ifb`),
    argv(`ip link set ${STAND_IN_IFB} up`),
    argv(`tc qdisc add dev ${STAND_IN_IFB} root handle ${plug} pfifo limit 10000`),
  ];
  if (topology === 'clsact-between-holds') return { install: ifb, remove: [argv(`ip link del ${STAND_IN_IFB}`)] };
  return {
    install: [
      ...ifb,
      argv(`tc qdisc add dev ${dev} clsact`),
      ...(topology === 'clsact' ? filters('egress', [HOOK_PRIO_V4, HOOK_PRIO_V6], `action mirred egress redirect dev ${STAND_IN_IFB}`) : []),
    ],
    remove: [argv(`tc qdisc del dev ${dev} clsact`), argv(`ip link del ${STAND_IN_IFB}`)],
  };
}
