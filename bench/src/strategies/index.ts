// The strategies, by name, in the order the report lists them.

import { baseline } from './baseline.js';
import { none } from './none.js';
import { drop, nfqueue, nfqueueExit, nfqueueNormal, nfqueueStopOld, nfqueueStopOldUnguarded, plug, plugExit, plugStopOld } from './synhold-hold.js';
import { plugSpawn } from './plug-spawn.js';
import { haproxySeamless } from './haproxy-seamless.js';
import { migrateReq } from './migrate-req.js';
import { STRATEGY_NAMES, type Strategy, type StrategyName } from './strategy.js';

export { STRATEGY_NAMES, StrategyUnavailable, type Strategy, type StrategyName, type KernelFeature } from './strategy.js';

const STRATEGIES: Record<StrategyName, Strategy> = {
  baseline,
  none,
  drop,
  plug,
  'plug-exit': plugExit,
  'plug-stop-old': plugStopOld,
  'plug-spawn': plugSpawn,
  nfqueue,
  'nfqueue-exit': nfqueueExit,
  'nfqueue-normal': nfqueueNormal,
  'nfqueue-stop-old': nfqueueStopOld,
  'nfqueue-stop-old-unguarded': nfqueueStopOldUnguarded,
  'haproxy-seamless': haproxySeamless,
  'migrate-req': migrateReq,
};

export function strategyFor(name: StrategyName): Strategy {
  return STRATEGIES[name];
}

export function isStrategyName(s: string): s is StrategyName {
  return (STRATEGY_NAMES as readonly string[]).includes(s);
}

/** Canonical order (baseline, none, then the protections). */
export function sortStrategies(names: StrategyName[]): StrategyName[] {
  return [...new Set(names)].sort((a, b) => STRATEGY_NAMES.indexOf(a) - STRATEGY_NAMES.indexOf(b));
}
