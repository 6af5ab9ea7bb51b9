#!/usr/bin/env bash
# Installs what the tests and the node-in-a-box need and is missing: Debian packages via apt (root),
# and kube-apiserver/kube-controller-manager/etcd built from Go modules into a cache outside the
# repository (hack/k8s-testbin.sh). Idempotent; prints the k8s binary directory on stdout.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
pkgs=(ostree skopeo dbus-daemon systemd-container debootstrap e2fsprogs util-linux iproute2 ca-certificates)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	if [ "$(id -u)" != 0 ]; then
		echo "deps: missing Debian packages: ${missing[*]} (run as root, or apt-get install them)" >&2
		exit 1
	fi
	echo "deps: installing ${missing[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >&2
	# policy-rc.d keeps package scripts from starting services on the host.
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
command -v go >/dev/null || { echo "deps: go is not on PATH" >&2; exit 1; }
# The booted tier's Debian rootfs and its ostree commit (debootstrap once, then cached).
(cd "$here/.." && GOFLAGS=-tags=containers_image_openpgp,exclude_graphdriver_btrfs,exclude_graphdriver_devicemapper \
	go run ./test/nspawn/cmd/nspawn-base >/dev/null)
"$here/k8s-testbin.sh"
