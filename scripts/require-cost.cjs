// What loading each named built-in costs, in a fresh node, in the order given (each one's time
// includes the built-ins it loads that the earlier ones did not): `process.hrtime` around its
// require. A script file, not `node -e`, because -e itself loads node:module. Used for the
// module-load figures in docs/PROTECT-COST.md:
//
//   node scripts/require-cost.cjs fs v8 perf_hooks module
//   scripts/lab -- node scripts/require-cost.cjs fs v8 perf_hooks module
'use strict';
const out = [];
for (const m of process.argv.slice(2)) {
  const t = process.hrtime.bigint();
  require(`node:${m}`);
  out.push(`${m} ${(Number(process.hrtime.bigint() - t) / 1e6).toFixed(2)} ms`);
}
console.log(out.join(' | '));
