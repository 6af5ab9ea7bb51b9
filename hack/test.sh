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
# What the suite must not leave behind: processes of the test world, mounts of its directories,
# and listening sockets that were not there before.
world_procs() { pgrep -a -f -- '(^|/)(etcd|kube-apiserver|kube-controller-manager|rpmostreed|systemd-nspawn) |dbus-daemon --config-file=.*(layerd|system.conf)' | grep -v pgrep || true; }
listeners() { awk 'NR>1 && $4=="0A" {print $2}' /proc/net/tcp /proc/net/tcp6 2>/dev/null | sort -u; }
mounts() { awk '$5 ~ /layerd|\/run\/systemd\/nspawn\/|\/host($|\/)/ {print $5}' /proc/self/mountinfo; }
procs_before=$(world_procs); listeners_before=$(listeners); mounts_before=$(mounts)
go test -race -count=1 -p 2 -timeout "$timeout" -v ${TEST_FLAGS:-} ${PKGS:-./...} >"$log" 2>&1
rc=$?
grep -E '^BENCH ' "$log" | sort -u
grep -E '^(ok|FAIL|---|panic:)[[:space:]]' "$log" | grep -vE '^--- (PASS|SKIP)' | grep -v '^    ---'
leftover=0
procs_after=$(world_procs)
if [ -n "$procs_after" ] && [ "$procs_after" != "$procs_before" ]; then
	echo "test: FAIL: the suite left test-world processes behind:"; echo "$procs_after"; leftover=1
fi
new_listeners=$(comm -13 <(echo "$listeners_before") <(listeners))
if [ -n "$new_listeners" ]; then
	echo "test: FAIL: the suite left listening sockets behind: $new_listeners"; leftover=1
fi
new_mounts=$(comm -13 <(echo "$mounts_before" | sort) <(mounts | sort))
if [ -n "$new_mounts" ]; then
	echo "test: FAIL: the suite left mounts behind: $new_mounts"; leftover=1
fi
[ "$leftover" = 0 ] && echo "test: nothing left behind (processes, mounts, listening sockets)"
[ "$rc" = 0 ] && [ "$leftover" != 0 ] && rc=1
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
