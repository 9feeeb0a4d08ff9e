#!/usr/bin/env bash
# Every test, in pytest processes arranged so that no two Ray jobs share the CPUs and the jobs whose faults are
# timed in seconds get the CPUs whenever they want them:
#   1. the unit and integration tests (gloo processes, no Ray, no timing checks), in the background at the
#      lowest priority (nice 19): they run on what the e2e jobs leave idle (waits for detection, for Ray);
#   2. beside them, one at a time, the e2e jobs that tolerate a busy machine;
#   3. then the e2e jobs that time faults in seconds (namespace hosts with slow links and partitions, bad GPUs
#      with SDC replays, hangs found in ~3 s): LATE below, also last in tests/conftest.py;
#   4. the wait for the unit and integration tests to finish.
# Extra arguments go to the e2e runs. Exit status: non-zero when any of them fails.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTEST="${VENV:-.venv}/bin/pytest"
LATE=(tests/e2e/test_netns_hosts.py tests/e2e/test_bad_gpu.py tests/e2e/test_recovery.py)
work=$(mktemp -d /tmp/orch-tests-XXXXXX)
nice -n 19 "$PYTEST" -q -ra --durations=15 -p no:cacheprovider --basetemp="$work/unit" tests/integration tests/unit \
    >"$work/unit.log" 2>&1 &
unit=$!
cleanup() { kill "$unit" 2>/dev/null; wait "$unit" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
ignore=()
for f in "${LATE[@]}"; do ignore+=("--ignore=$f"); done
"$PYTEST" -q -ra --durations=30 -p no:cacheprovider --basetemp="$work/early" tests/e2e "${ignore[@]}" "$@"
early=$?
echo "---- e2e jobs that time faults in seconds ----"
"$PYTEST" -q -ra --durations=30 -p no:cacheprovider --basetemp="$work/late" "${LATE[@]}" "$@"
late=$?
wait "$unit"
units=$?
echo "---- unit and integration tests (run beside the above, at the lowest priority) ----"
tail -n 80 "$work/unit.log"
echo "e2e: exit $early (tolerant of load), $late (timed); unit and integration: exit $units"
[ "$early" -eq 0 ] && [ "$late" -eq 0 ] && [ "$units" -eq 0 ]
