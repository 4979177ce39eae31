#!/usr/bin/env bash
# Builds the pinned binaries of the local test environment from source, through
# the Go module proxy, into a cache outside the repository, and prints the bin
# directory on the last line of stdout. Anything already built is reused.
#
#   hack/testenv.sh            build what is missing, print the bin directory
#   hack/testenv.sh --print    print the bin directory only
#
# TESTENV_CACHE overrides the cache root
# (default: ${XDG_CACHE_HOME:-$HOME/.cache}/autorollbackd/testenv).
set -euo pipefail

K8S_VERSION=v1.37.2
K8S_STAGING_VERSION=v0.37.2
ETCD_VERSION=v3.6.16
KWOK_VERSION=v0.8.0
PROMETHEUS_VERSION=v0.316.0
ALERTMANAGER_VERSION=v0.31.1
HELM_VERSION=v3.22.0

key="k8s-${K8S_VERSION}_etcd-${ETCD_VERSION}_kwok-${KWOK_VERSION}_prom-${PROMETHEUS_VERSION}_am-${ALERTMANAGER_VERSION}_helm-${HELM_VERSION}"
root="${TESTENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/autorollbackd/testenv}/${key}"
bin="${root}/bin"

if [[ "${1:-}" == "--print" ]]; then
  echo "${bin}"
  exit 0
fi

mkdir -p "${bin}" "${root}/src"
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"
export CGO_ENABLED=0

log() { printf '[testenv %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

have() {
  local f
  for f in "$@"; do [[ -x "${bin}/${f}" ]] || return 1; done
}

# go_install installs module@version's commands straight into the cache.
go_install() {
  local version=$1; shift
  local pkgs=() p
  for p in "$@"; do pkgs+=("${p}@${version}"); done
  GOBIN="${bin}" go install -ldflags "-s -w" "${pkgs[@]}"
}

build_kubernetes() {
  have kube-apiserver kube-controller-manager kube-scheduler kubectl && return 0
  log "building Kubernetes ${K8S_VERSION} (kube-apiserver, kube-controller-manager, kube-scheduler, kubectl); about 7 minutes on 2 cores"
  local dir="${root}/src/kubernetes"
  rm -rf "${dir}" && mkdir -p "${dir}"
  cd "${dir}"
  # k8s.io/kubernetes replaces its staging modules with local paths, so it
  # cannot be built as a dependency as is. Replace each of them with the
  # published module of the matching version instead.
  local gomod
  gomod=$(GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@${K8S_VERSION}" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')
  [[ -f "${gomod}" ]] || { log "cannot find go.mod of k8s.io/kubernetes@${K8S_VERSION}"; return 1; }
  {
    echo "module autorollbackd.local/testenv/kubernetes"
    echo
    echo "go 1.26"
    echo
    sed -n 's#^[[:space:]]*\(k8s\.io/[a-z0-9-]*\) => \./staging/src/k8s\.io/[a-z0-9-]*$#replace \1 => \1 '"${K8S_STAGING_VERSION}"'#p' "${gomod}"
  } > go.mod
  grep -q '^replace k8s.io/client-go ' go.mod || { log "no staging replaces found in ${gomod}"; return 1; }
  local cmds=(k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl)
  local p
  for p in "${cmds[@]}"; do go get "${p}@${K8S_VERSION}"; done
  local minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  local ld="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X ${p}.gitVersion=${K8S_VERSION} -X ${p}.gitMajor=1 -X ${p}.gitMinor=${minor} -X ${p}.gitTreeState=clean"
  done
  go build -ldflags "${ld}" -o "${bin}/" "${cmds[@]}"
}

build_etcd() {
  have etcd && return 0
  log "building etcd ${ETCD_VERSION}"
  local dir="${root}/src/etcd"
  rm -rf "${dir}" && mkdir -p "${dir}"
  cd "${dir}"
  cat > go.mod <<MOD
module autorollbackd.local/testenv/etcd

go 1.26
MOD
  cat > main.go <<'SRC'
// Command etcd runs the etcd server for the local test environment.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
SRC
  go get "go.etcd.io/etcd/server/v3@${ETCD_VERSION}"
  go mod tidy
  go build -ldflags "-s -w" -o "${bin}/etcd" .
}

build_kwok() {
  have kwok kwokctl && return 0
  log "building kwok ${KWOK_VERSION}"
  go_install "${KWOK_VERSION}" sigs.k8s.io/kwok/cmd/kwok sigs.k8s.io/kwok/cmd/kwokctl
}

build_prometheus() {
  have prometheus promtool && return 0
  log "building Prometheus ${PROMETHEUS_VERSION}"
  go_install "${PROMETHEUS_VERSION}" github.com/prometheus/prometheus/cmd/prometheus github.com/prometheus/prometheus/cmd/promtool
}

build_alertmanager() {
  have alertmanager amtool && return 0
  log "building Alertmanager ${ALERTMANAGER_VERSION}"
  go_install "${ALERTMANAGER_VERSION}" github.com/prometheus/alertmanager/cmd/alertmanager github.com/prometheus/alertmanager/cmd/amtool
}

build_helm() {
  have helm && return 0
  log "building Helm ${HELM_VERSION}"
  go_install "${HELM_VERSION}" helm.sh/helm/v3/cmd/helm
}

start=$(date +%s)
build_kwok
build_etcd
build_kubernetes
build_prometheus
build_alertmanager
build_helm
log "ready in $(( $(date +%s) - start ))s: ${bin}"
echo "${bin}"
