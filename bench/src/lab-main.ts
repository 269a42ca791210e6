// Entry point inside the kernel lab (User-Mode Linux): `synhold bench` starts
//
//   runInLab({ command: [node, dist/bench/src/lab-main.js, GROUP.json], share: [workDir] })
//
// and this runs the group's strategies there exactly as the host runs its own
// (group.ts: a namespace per strategy, created in the guest's kernel). Results
// and progress go to the shared work directory; the guest's namespaces, qdiscs
// and processes vanish with it.

import { runGroup } from './group.js';
import { readJsonFile, type GroupSpec } from './protocol.js';

const path = process.argv[2];
const g = path ? readJsonFile<GroupSpec>(path) : undefined;
if (!g) {
  process.stderr.write(`bench lab: cannot read the group spec ${path ?? '(none given)'}\n`);
  process.exit(1);
}
runGroup(g).then(
  () => process.exit(0),
  (e: unknown) => {
    process.stderr.write(`bench lab: ${e instanceof Error ? e.stack : String(e)}\n`);
    process.exit(1);
  },
);
