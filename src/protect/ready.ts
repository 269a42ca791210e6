/**
 * protect --ready tcp:HOST:PORT: the reload counts as done only once a TCP connect
 * there succeeds. The target must be one the hold does not hold, or the probe
 * could never succeed.
 */
import { ConfigError } from '../model/errors.js';
import type { SetupConfig } from '../model/config.js';
import { synMatches } from '../model/syn-match.js';

/** Throws if --ready points at something the hold itself would hold: the probe could never succeed. */
export function checkReadyTarget(cfg: SetupConfig, host: string, port: number): void {
  const tuples = synMatches(cfg).filter((t) => t.port === port);
  if (!tuples.length) return;
  const steered = tuples.some((t) => !t.src && (!t.dst || t.dst.address === host || t.dst.prefixLength < (t.family === 4 ? 32 : 128)));
  if (steered) {
    throw new ConfigError(
      `--ready ${host}:${port} is a protected destination: its SYN would be held too. Point --ready at an unprotected port (e.g. a stats or health port) or address`,
    );
  }
}

/** Whether a TCP connect to host:port succeeds within timeoutMs. */
export async function probeTcp(host: string, port: number, timeoutMs: number): Promise<boolean> {
  // Loaded on first use (only with --ready): node:net is a costly module to load on every reload.
  const { connect } = await import('node:net');
  return new Promise((resolve) => {
    const s = connect({ host, port });
    const t = setTimeout(() => {
      s.destroy();
      resolve(false);
    }, timeoutMs);
    s.once('connect', () => {
      clearTimeout(t);
      s.destroy();
      resolve(true);
    });
    s.once('error', () => {
      clearTimeout(t);
      resolve(false);
    });
  });
}
