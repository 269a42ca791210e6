/** The hold backends, looked up by name. */
import type { BackendName } from '../model/config.js';
import type { HoldBackend } from './backend.js';
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
