/**
 * The hold backends, looked up by name, and `--backend auto`: find out what this
 * kernel can do, without touching any traffic, and pick plug, then nfqueue,
 * then drop.
 */
import { NoBackendError } from '../model/errors.js';
import type { BackendName, SetupConfig } from '../model/config.js';
import type { BackendContext, HoldBackend } from './backend.js';
import { dropBackend } from './drop.js';
import { nfqueueBackend } from './nfqueue.js';
import { plugBackend } from './plug.js';

const BACKENDS: Record<BackendName, HoldBackend<never>> = {
  plug: plugBackend as HoldBackend<never>,
  nfqueue: nfqueueBackend as HoldBackend<never>,
  drop: dropBackend as HoldBackend<never>,
};

export function backendFor(name: BackendName): HoldBackend<unknown> {
  return BACKENDS[name] as HoldBackend<unknown>;
}

/** Best first: no retransmit and no loss, then no loss, then the seed's baseline. */
const PREFERENCE: readonly BackendName[] = ['plug', 'nfqueue', 'drop'];

/** Picks the backend: the requested one, or the best this kernel supports, with the reason. */
export async function chooseBackend(cfg: SetupConfig, ctx: BackendContext): Promise<{ backend: BackendName; reason: string }> {
  if (cfg.backend !== 'auto') return { backend: cfg.backend, reason: 'requested' };
  const notes: string[] = [];
  for (const name of PREFERENCE) {
    const r = await BACKENDS[name].probe(cfg, ctx);
    if (r.ok) {
      return { backend: name, reason: notes.length ? `auto: ${notes.join('; ')}` : `auto: this kernel supports ${name}` };
    }
    notes.push(`no ${name}: missing ${r.missing}`);
  }
  throw new NoBackendError(`no hold backend works here: ${notes.join('; ')}`);
}
