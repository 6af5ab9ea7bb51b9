#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager and etcd from hack/k8s-testbin (a build-only
# module) into a cache directory keyed by that module's go.mod+go.sum, and prints the directory.
# Cached: ~0.02 s. Cold: ~8-12 min on 2 cores.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
mod="$here/k8s-testbin"
key=$(cat "$mod/go.mod" "$mod/go.sum" | sha256sum | cut -c1-12)
cache="${LAYERD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/layerd}/k8s-testbin"
out="$cache/$key"
want=(kube-apiserver kube-controller-manager etcd)
complete() { for b in "${want[@]}"; do [ -x "$out/$b" ] || return 1; done; }
if complete; then echo "$out"; exit 0; fi
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9
if complete; then echo "$out"; exit 0; fi
tmp="$out.tmp.$$"
rm -rf "$tmp"; mkdir -p "$tmp"
cd "$mod"
export CGO_ENABLED=0 GOWORK=off GOFLAGS=-mod=mod
V=k8s.io/component-base/version
kv=$(go list -m -f "{{.Version}}" k8s.io/kubernetes)
minor=$(echo "$kv" | cut -d. -f2)
ld="-s -w -X $V.gitVersion=$kv -X $V.gitMajor=1 -X $V.gitMinor=$minor -X $V.gitTreeState=clean -X $V.buildDate=1970-01-01T00:00:00Z"
echo "building k8s test binaries $kv into $out (cold build takes minutes)" >&2
go build -trimpath -ldflags "$ld" -o "$tmp/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver >&2
go build -trimpath -ldflags "$ld" -o "$tmp/kube-controller-manager" k8s.io/kubernetes/cmd/kube-controller-manager >&2
go build -trimpath -ldflags "-s -w" -o "$tmp/etcd" go.etcd.io/etcd/server/v3 >&2
rm -rf "$out"; mv "$tmp" "$out"
echo "$out"
