#!/usr/bin/env bash
# Every test, in two pytest processes side by side: the unit tests in one, and in the other the tests that
# start processes or Ray (integration, then e2e), one at a time, so that no two of their jobs share the CPUs.
# Extra arguments go to the second. Exit status: non-zero when either fails.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTEST="${VENV:-.venv}/bin/pytest"
work=$(mktemp -d /tmp/orch-tests-XXXXXX)
"$PYTEST" -q -ra -p no:cacheprovider --basetemp="$work/unit" tests/unit >"$work/unit.log" 2>&1 &
unit=$!
cleanup() { kill "$unit" 2>/dev/null; wait "$unit" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
"$PYTEST" -q -ra --durations=30 -p no:cacheprovider tests/integration tests/e2e "$@"
procs=$?
wait "$unit"
units=$?
echo "---- unit tests (run beside the above) ----"
tail -n 60 "$work/unit.log"
echo "integration + e2e: exit $procs; unit: exit $units"
[ "$procs" -eq 0 ] && [ "$units" -eq 0 ]
