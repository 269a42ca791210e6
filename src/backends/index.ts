/** The hold backends, looked up by name. */
import type { BackendName } from '../protect/config.js';
import type { HoldBackend } from './backend.js';
import { plugBackend } from './plug.js';

const BACKENDS: Partial<Record<BackendName, HoldBackend<never>>> = {
  plug: plugBackend as HoldBackend<never>,
};

export function registerBackend(b: HoldBackend<never>): void {
  BACKENDS[b.name] = b;
}

export function backendFor(name: BackendName): HoldBackend<unknown> {
  const b = BACKENDS[name];
  if (!b) throw new Error(`no backend named ${name}`);
  return b as HoldBackend<unknown>;
}
