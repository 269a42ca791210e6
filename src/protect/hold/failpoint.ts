/**
 * Fault-injection points for the fault-matrix tests (test/faults/): with
 * SYNHOLD_FAILPOINT=NAME in its environment, a process stops itself (SIGSTOP)
 * when it reaches NAME, so that a test can kill it or leave it stopped at
 * exactly that phase of a hold. Unset (always, outside tests), it costs one
 * environment lookup.
 *
 *   held       the kernel hold is on, the hold record not yet written
 *   releasing  the owner told its watchdog it releases, and has not yet
 *   returned   the protect CLI: protect has returned (released, its own signal
 *              trap removed), the report not yet written
 */
export type Failpoint = 'held' | 'releasing' | 'returned';

export function failpoint(name: Failpoint): void {
  if (process.env.SYNHOLD_FAILPOINT === name) process.kill(process.pid, 'SIGSTOP');
}
