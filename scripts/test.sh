#!/usr/bin/env bash
# The test command (README, .ci/run): installs what the tests need, builds,
# then runs every test with node's test runner.
#
#   test/repo       the repository's own promises (every program it runs is installed)
#   test/codec      golden bytes and fuzzing, no kernel needed
#   test/kernel     this machine's kernel, one fresh network namespace per test
#   test/cli        the synhold command as a user runs it
#   test/reload     real HAProxy reloaded under load on this kernel (nfqueue, drop)
#   test/buffer     synhold buffer (nfqueue) on this kernel, a namespace per test
#   test/bench      the benchmark's parts (real nginx, HAProxy, load)
#   test/lab        the kernel lab: boots User-Mode Linux (which has sch_plug) and
#                   runs test/lab-guest there; fails, never skips, if it cannot
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
# One style, enforced: eslint and prettier (configured once, at the root).
npm run --silent lint

# Namespaces a killed earlier run may have left: test helpers name theirs
# synhold-<kind>-<pid>-<random>; only those whose creating process is gone are
# removed, so a concurrent run (or a running benchmark) is never disturbed.
for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^synhold-[a-z]+-[0-9]+-[0-9a-f]+$' || true); do
  pid=$(echo "$ns" | awk -F- '{print $3}')
  kill -0 "$pid" 2>/dev/null || ip netns delete "$ns" 2>/dev/null || true
done

dirs=()
for d in repo codec unit kernel cli reload faults buffer soak bench lab; do [[ -d dist/test/$d ]] && dirs+=("dist/test/$d"); done
# One file at a time: kernel tests are timing-sensitive and the lab wants the CPU.
exec node --test --test-concurrency=1 "${dirs[@]}"
