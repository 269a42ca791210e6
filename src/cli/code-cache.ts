/**
 * The CLI's hooks into its executable (src/cli/bin.ts).
 *
 * Asks the executable (src/cli/bin.ts) to save the V8 code cache of this run, if it has none that
 * it could use. Called after a protect run, the path the cache is for. A no-op when the CLI was
 * not started through bin.ts (dist/src/cli/main.js, the library) or the cache was used.
 */
const SAVE_HOOK = Symbol.for('synhold.saveCodeCache');

export function saveCodeCache(): void {
  const g = globalThis as Record<symbol, unknown>;
  const save = g[SAVE_HOOK];
  if (typeof save !== 'function') return;
  delete g[SAVE_HOOK];
  (save as () => void)();
}

/**
 * import() for the ESM bench package: bin.ts's own when the CLI runs through it (code run by a
 * vm.Script cannot import), else one through a function esbuild does not rewrite into require().
 */
export function importEsm(specifier: string): Promise<unknown> {
  const viaBin = (globalThis as Record<symbol, unknown>)[Symbol.for('synhold.importEsm')];
  if (typeof viaBin === 'function') return (viaBin as (s: string) => Promise<unknown>)(specifier);
  return (new Function('specifier', 'return import(specifier)') as (s: string) => Promise<unknown>)(specifier);
}
