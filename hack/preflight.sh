#!/usr/bin/env bash
# Fails loudly (never skips) when something the test suite needs is missing.
set -uo pipefail
fail=0
need() { echo "preflight: MISSING: $*" >&2; fail=1; }
[ "$(id -u)" = 0 ] || need "root (ostree sysroots, mount namespaces and systemd-nspawn need it)"
for c in unshare chattr nsenter systemd-nspawn ostree dbus-daemon debootstrap go; do
	command -v "$c" >/dev/null || need "command $c"
done
[ -n "${LAYERD_K8S_BIN:-}" ] && for b in kube-apiserver kube-controller-manager etcd; do
	[ -x "$LAYERD_K8S_BIN/$b" ] || need "$LAYERD_K8S_BIN/$b (run make deps)"
done
avail=$(df -Pk "${TMPDIR:-/tmp}" | awk 'NR==2 {print $4}')
[ "${avail:-0}" -ge $((4 * 1024 * 1024)) ] || need "4 GiB free in ${TMPDIR:-/tmp} (have $((avail / 1024)) MiB)"
if [ -d "${HOME:-/root}" ]; then
	avail=$(df -Pk "${HOME:-/root}" | awk 'NR==2 {print $4}')
	[ "${avail:-0}" -ge $((6 * 1024 * 1024)) ] || need "6 GiB free in $HOME for build and rootfs caches"
fi
unshare -m -p -f --propagation private true 2>/dev/null || need "mount+PID namespaces (unshare -m -p -f)"
[ $fail = 0 ] || { echo "preflight: failed; the test suite cannot run here" >&2; exit 1; }
echo "preflight: ok" >&2
