#!/usr/bin/env bash
# Every test, in pytest processes arranged so that no two Ray jobs share the CPUs and no job whose faults are
# timed in seconds runs beside anything:
#   1. the unit and integration tests (gloo processes, no timing checks), in the background;
#   2. beside them, one at a time, the e2e jobs that tolerate a busy machine;
#   3. once both are done, alone, the e2e jobs that time faults in seconds (namespace hosts with slow links and
#      partitions, bad GPUs with SDC replays, hangs found in ~3 s): LATE below, also last in tests/conftest.py.
# Extra arguments go to the e2e runs. Exit status: non-zero when any of them fails.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTEST="${VENV:-.venv}/bin/pytest"
LATE=(tests/e2e/test_netns_hosts.py tests/e2e/test_bad_gpu.py tests/e2e/test_recovery.py)
work=$(mktemp -d /tmp/orch-tests-XXXXXX)
"$PYTEST" -q -ra --durations=15 -p no:cacheprovider --basetemp="$work/unit" tests/integration tests/unit \
    >"$work/unit.log" 2>&1 &
unit=$!
cleanup() { kill "$unit" 2>/dev/null; wait "$unit" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
ignore=()
for f in "${LATE[@]}"; do ignore+=("--ignore=$f"); done
"$PYTEST" -q -ra --durations=30 -p no:cacheprovider --basetemp="$work/early" tests/e2e "${ignore[@]}" "$@"
early=$?
wait "$unit"
units=$?
echo "---- unit and integration tests (run beside the above) ----"
tail -n 80 "$work/unit.log"
echo "---- e2e jobs that time faults in seconds, alone ----"
"$PYTEST" -q -ra --durations=30 -p no:cacheprovider --basetemp="$work/late" "${LATE[@]}" "$@"
late=$?
echo "e2e: exit $early (beside the unit tests), $late (alone); unit and integration: exit $units"
[ "$early" -eq 0 ] && [ "$late" -eq 0 ] && [ "$units" -eq 0 ]
