/**
 * `--backend auto`: find out what this kernel can do, without touching any
 * traffic, and pick plug, then nfqueue, then drop.
 *
 * The plug probe creates a root plug qdisc on a throwaway IFB device that
 * carries no traffic (never on lo: a new plug starts plugged, and deleting it
 * drops what it holds), then deletes the device and its qdiscs with it.
 */
import { randomBytes } from 'node:crypto';
import { SynholdError } from '../model/errors.js';
import { NetlinkError } from '../netlink/errors.js';
import { addIfb, deleteLink } from '../rtnl/link.js';
import { addQdisc, deleteQdisc } from '../rtnl/tc/qdisc.js';
import { TC_H_ROOT, makeHandle } from '../rtnl/tc/handle.js';
import type { BackendContext } from '../backends/backend.js';
import { probeDrop } from '../backends/drop.js';
import { probeNfqueue } from '../backends/nfqueue.js';
import type { BackendName, SetupConfig } from '../model/config.js';

export interface ProbeResult {
  ok: boolean;
  /** What is missing, in kernel terms (module / config option). */
  missing?: string;
}

/** Can this kernel build the plug topology `cfg` asks for? */
export async function probePlug(cfg: SetupConfig, ctx: BackendContext): Promise<ProbeResult> {
  const name = `shprobe${randomBytes(3).toString('hex')}`;
  try {
    await addIfb(ctx.rt, name);
  } catch (e) {
    if (cfg.direction === 'ingress') return { ok: false, missing: `IFB devices (CONFIG_IFB / module ifb): ${(e as Error).message}` };
    return { ok: false, missing: `a throwaway IFB device to probe on: ${(e as Error).message}` };
  }
  try {
    const kinds = cfg.direction === 'egress' ? ['plug', 'prio'] : ['plug'];
    for (const kind of kinds) {
      try {
        await addQdisc(ctx.rt, { dev: name, parent: TC_H_ROOT, handle: makeHandle(1, 0), kind, options: kind === 'plug' ? { action: 'limit', limit: 1 } : { bands: 3 } });
        await deleteQdisc(ctx.rt, { dev: name, parent: TC_H_ROOT });
      } catch (e) {
        if (e instanceof NetlinkError && /kind is unknown/i.test(e.kernelMessage ?? '')) {
          return { ok: false, missing: `sch_${kind} (CONFIG_NET_SCH_${kind.toUpperCase()}; \`modprobe sch_${kind}\`)` };
        }
        return { ok: false, missing: `sch_${kind}: ${(e as Error).message}` };
      }
    }
    return { ok: true };
  } finally {
    await deleteLink(ctx.rt, name).catch(() => undefined);
  }
}

type Prober = (cfg: SetupConfig, ctx: BackendContext) => Promise<ProbeResult>;

const probers: Record<BackendName, Prober> = { plug: probePlug, nfqueue: probeNfqueue, drop: probeDrop };

/** Picks the backend: the requested one, or the best this kernel supports, with the reason. */
export async function chooseBackend(cfg: SetupConfig, ctx: BackendContext): Promise<{ backend: BackendName; reason: string }> {
  if (cfg.backend !== 'auto') return { backend: cfg.backend, reason: 'requested' };
  const notes: string[] = [];
  for (const name of ['plug', 'nfqueue', 'drop'] as const) {
    const r = await probers[name](cfg, ctx);
    if (r.ok) {
      return { backend: name, reason: notes.length ? `auto: ${notes.join('; ')}` : `auto: this kernel supports ${name}` };
    }
    notes.push(`no ${name}: missing ${r.missing}`);
  }
  throw new SynholdError('ERR_NO_BACKEND', `no hold backend works on this kernel: ${notes.join('; ')}`);
}
