/**
 * What the cost scripts (protect-cost.ts, steady-state.ts) share: the median,
 * and their `report` page: a fixed head, then one section per run read from
 * `RUN.json=COMMAND` (the JSON a run printed, and the command that made it),
 * then `--notes FILE.md` verbatim.
 */
import { readFileSync, writeFileSync } from 'node:fs';

export { median } from '../median.js';

/** `report OUT.md [--notes FILE.md] RUN.json=COMMAND ...`: head, each run's section, the notes. */
export function writeReportPage<Run>(
  out: string,
  args: string[],
  head: string[],
  section: (run: Run, command: string) => string,
  /** Written after the head, before the runs' sections: what the runs say together. */
  summary?: (runs: Run[]) => string,
): void {
  const notesAt = args.indexOf('--notes');
  const notes = notesAt >= 0 ? readFileSync(args[notesAt + 1]!, 'utf8') : '';
  const inputs = notesAt >= 0 ? args.filter((_, i) => i !== notesAt && i !== notesAt + 1) : args;
  const runs = inputs.map((spec) => {
    const eq = spec.indexOf('=');
    return { run: JSON.parse(readFileSync(spec.slice(0, eq), 'utf8')) as Run, command: spec.slice(eq + 1) };
  });
  const parts = [...head];
  if (summary) parts.push(summary(runs.map((r) => r.run)));
  for (const { run, command } of runs) parts.push(section(run, command));
  writeFileSync(out, `${parts.join('\n')}${notes ? `\n${notes}` : ''}`);
}
