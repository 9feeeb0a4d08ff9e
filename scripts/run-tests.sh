#!/usr/bin/env bash
# Every test, in two pytest processes side by side: the unit and integration tests (gloo processes, no
# timing checks) in one, and the e2e jobs (real Ray, faults timed in seconds) one at a time in the other, so
# that no two jobs share the CPUs; the e2e modules that time faults run last, once the first process is done.
# Extra arguments go to the second. Exit status: non-zero when either fails.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTEST="${VENV:-.venv}/bin/pytest"
work=$(mktemp -d /tmp/orch-tests-XXXXXX)
"$PYTEST" -q -ra --durations=15 -p no:cacheprovider --basetemp="$work/unit" tests/integration tests/unit \
    >"$work/unit.log" 2>&1 &
unit=$!
cleanup() { kill "$unit" 2>/dev/null; wait "$unit" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
"$PYTEST" -q -ra --durations=30 -p no:cacheprovider tests/e2e "$@"
procs=$?
wait "$unit"
units=$?
echo "---- unit and integration tests (run beside the above) ----"
tail -n 80 "$work/unit.log"
echo "e2e: exit $procs; unit and integration: exit $units"
[ "$procs" -eq 0 ] && [ "$units" -eq 0 ]
