#!/usr/bin/env bash
# Runs the whole test suite (unit, fuzz seeds, e2e through the real parts) with -race, keeps the
# verbose log in _out/test.log and prints the BENCH lines, the per-package results and, on
# failure, the failing tests' output.
set -uo pipefail
mkdir -p _out
log=_out/test.log
timeout=${TEST_TIMEOUT:-60m}
echo "test: go test -race -count=1 -p 2 -timeout $timeout ${TEST_FLAGS:-} ${PKGS:-./...} (log: $log)"
start=$(date +%s)
go test -race -count=1 -p 2 -timeout "$timeout" -v ${TEST_FLAGS:-} ${PKGS:-./...} >"$log" 2>&1
rc=$?
grep -E '^BENCH ' "$log" | sort -u
grep -E '^(ok|FAIL|---|panic:)[[:space:]]' "$log" | grep -vE '^--- (PASS|SKIP)' | grep -v '^    ---'
passed=$(grep -cE '^\s*--- PASS' "$log")
failed=$(grep -cE '^\s*--- FAIL' "$log")
skipped=$(grep -cE '^\s*--- SKIP' "$log")
if [ "$rc" != 0 ]; then
	echo "test: FAILED (exit $rc); the last 300 lines of $log:"
	tail -n 300 "$log"
fi
echo "test: wall time $(( $(date +%s) - start ))s"
echo "$passed passed, $failed failed, $skipped skipped"
exit "$rc"
