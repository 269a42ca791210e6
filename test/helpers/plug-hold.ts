/** The plug backend's own hold, without the hold layer's lock, record and watchdog (for tests of the kernel object itself). */
import type { ActiveHold, BackendContext } from '../../src/backends/backend.js';
import { plugBackend, type PlugState } from '../../src/backends/plug.js';

export async function holdDirect(state: PlugState, ctx: BackendContext): Promise<ActiveHold> {
  const prepared = await plugBackend.prepare(state, ctx);
  const hold = await prepared.start();
  return {
    async release() {
      try {
        return await hold.release();
      } finally {
        prepared.close();
      }
    },
  };
}
