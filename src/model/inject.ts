/**
 * Error-injection points for the tests of failure paths no real kernel fault reaches on demand
 * (a netlink request that fails half-way through a hold's start): with SYNHOLD_INJECT=NAME[,NAME...]
 * in its environment, a process throws at NAME instead of going on. Unset (always, outside tests),
 * it costs one environment lookup. SIGSTOP at a phase is failpoint() (src/protect/hold/failpoint.ts).
 *
 *   steering-added  plug, steering while holding: the hold's hook and filters are in place
 *   start-release   plug: the plug's release after a hold's start failed
 *   steering-cleanup  plug, steering while holding: the owner's removal of the steering after its
 *                   watchdog let go on its own (ActiveHold.afterWatchdogRelease)
 */
export type Fault = 'steering-added' | 'start-release' | 'steering-cleanup';

export class InjectedFault extends Error {
  constructor(readonly fault: Fault) {
    super(`injected fault at ${fault} (SYNHOLD_INJECT)`);
    this.name = 'InjectedFault';
  }
}

export function fault(name: Fault): void {
  const set = process.env.SYNHOLD_INJECT;
  if (set && set.split(',').includes(name)) throw new InjectedFault(name);
}
