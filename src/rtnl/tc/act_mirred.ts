/**
 * act_mirred (net/sched/act_mirred.c): mirror or redirect a packet to another
 * device. synhold redirects matching SYNs arriving on a real interface to the
 * IFB device whose root qdisc is the plug: ingress cannot be queued, egress can.
 */
import { EncodeError } from '../../netlink/errors.js';
import { defineAttributes, defineStruct } from '../../netlink/schema.js';
import type { TcKind } from './kind.js';

/** struct tc_mirred: tc_gen (index, capab, action, refcnt, bindcnt) + eaction + ifindex (tc_mirred.h) */
export const tcMirred = defineStruct('tc_mirred', [
  ['index', 'u32'],
  ['capab', 'u32'],
  ['action', 's32'],
  ['refcnt', 's32'],
  ['bindcnt', 's32'],
  ['eaction', 's32'],
  ['ifindex', 'u32'],
] as const);

/** TCA_MIRRED_* */
export const mirredAttrs = defineAttributes('tca_mirred', {
  tm: { type: 1, kind: 'binary' },
  parms: { type: 2, kind: 'struct', struct: tcMirred },
  pad: { type: 3, kind: 'binary' },
  blockid: { type: 4, kind: 'u32' },
});

export const TCA_EGRESS_REDIR = 1;
export const TCA_EGRESS_MIRROR = 2;
export const TCA_INGRESS_REDIR = 3;
export const TCA_INGRESS_MIRROR = 4;

/** TC_ACT_* verdicts (include/uapi/linux/pkt_cls.h) */
export const TC_ACT_OK = 0;
export const TC_ACT_RECLASSIFY = 1;
export const TC_ACT_SHOT = 2;
export const TC_ACT_PIPE = 3;
export const TC_ACT_STOLEN = 4;

export interface MirredOptions {
  /** `egress redirect` is what steering to an IFB needs. */
  eaction: 'egress_redirect' | 'egress_mirror' | 'ingress_redirect' | 'ingress_mirror';
  ifindex: number;
  /** Verdict after the action; tc uses STOLEN for redirect and PIPE for mirror. */
  action?: number;
}

const EACTIONS = {
  egress_redirect: TCA_EGRESS_REDIR,
  egress_mirror: TCA_EGRESS_MIRROR,
  ingress_redirect: TCA_INGRESS_REDIR,
  ingress_mirror: TCA_INGRESS_MIRROR,
} as const;

export const actMirred: TcKind<MirredOptions> = {
  kind: 'mirred',
  encodeOptions(o) {
    const eaction = EACTIONS[o.eaction];
    if (eaction === undefined) throw new EncodeError('tc_mirred', `unknown mirred action "${String(o.eaction)}"`);
    const action = o.action ?? (o.eaction.endsWith('redirect') ? TC_ACT_STOLEN : TC_ACT_PIPE);
    return mirredAttrs.encode({ parms: { index: 0, capab: 0, action, refcnt: 0, bindcnt: 0, eaction, ifindex: o.ifindex } });
  },
  decodeOptions(payload) {
    const a = mirredAttrs.decode(payload);
    const p = a.parms;
    if (!p) return { unknown: a.unknown };
    const eaction = (Object.keys(EACTIONS) as (keyof typeof EACTIONS)[]).find((k) => EACTIONS[k] === p.eaction) ?? p.eaction;
    return { eaction, ifindex: p.ifindex, action: p.action, index: p.index };
  },
};
