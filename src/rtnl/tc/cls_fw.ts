/**
 * cls_fw (net/sched/cls_fw.c): classify by the packet's firewall mark. The seed
 * marked SYNs with iptables and steered mark 1 to the plug band with
 * `tc filter ... handle 1 fw classid 1:4`; synhold's u32 match needs no
 * iptables, but the fw form is here for setups that already mark packets.
 */
import { defineAttributes } from '../../netlink/schema.js';
import { decodeActionList, encodeActionList, tcaActAttrs, type ActionSpec } from './actions.js';
import type { TcKind } from './kind.js';

/** TCA_FW_* */
export const fwAttrs = defineAttributes('tca_fw', {
  classid: { type: 1, kind: 'u32' },
  police: { type: 2, kind: 'binary' },
  indev: { type: 3, kind: 'string' },
  act: { type: 4, kind: 'array', set: () => tcaActAttrs },
  mask: { type: 5, kind: 'u32' },
});

export interface FwOptions {
  /** The mark itself is the filter handle; these are the options. */
  classid?: number;
  mask?: number;
  actions?: readonly ActionSpec[];
}

export const clsFw: TcKind<FwOptions> = {
  kind: 'fw',
  encodeOptions(o) {
    const v: Parameters<typeof fwAttrs.encode>[0] = {};
    if (o.classid !== undefined) v.classid = o.classid;
    if (o.actions?.length) v.act = encodeActionList(o.actions);
    if (o.mask !== undefined) v.mask = o.mask;
    return fwAttrs.encode(v);
  },
  decodeOptions(payload) {
    const a = fwAttrs.decode(payload);
    const out: Record<string, unknown> = {};
    if (a.classid !== undefined) out.classid = a.classid;
    if (a.mask !== undefined) out.mask = a.mask;
    if (a.act) out.actions = decodeActionList(a.act);
    return out;
  },
};
