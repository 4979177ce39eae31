#!/usr/bin/env bash
# Builds the pinned binaries of the local test environment from source, through
# the Go module proxy, into a cache outside the repository, and prints the bin
# directory on the last line of stdout. It also takes the CustomResourceDefinitions
# of the deploy tools (Argo Rollouts, Argo CD, Flux) from their module zips into
# the crds directory beside bin. Anything already there is reused.
#
#   hack/testenv.sh                 build what is missing, print the bin directory
#   hack/testenv.sh --print         print the bin directory only
#   hack/testenv.sh --print-crds    print the CRD directory only
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
# The deploy tools are not part of the cache key, so that adding or bumping one
# does not rebuild the control plane; each records the version it was built
# from in stamps/ and is rebuilt when that differs.
ROLLOUTS_VERSION=v1.10.0
ARGOCD_VERSION=v3.6.1
FLUX_KUSTOMIZE_VERSION=v1.10.1
FLUX_HELM_VERSION=v1.4.0
FLUX_SOURCE_VERSION=v1.10.1

key="k8s-${K8S_VERSION}_etcd-${ETCD_VERSION}_kwok-${KWOK_VERSION}_prom-${PROMETHEUS_VERSION}_am-${ALERTMANAGER_VERSION}_helm-${HELM_VERSION}"
root="${TESTENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/autorollbackd/testenv}/${key}"
bin="${root}/bin"
crds="${root}/crds"
stamps="${root}/stamps"

case "${1:-}" in
  --print) echo "${bin}"; exit 0 ;;
  --print-crds) echo "${crds}"; exit 0 ;;
  "") ;;
  *) echo "usage: $0 [--print | --print-crds]" >&2; exit 2 ;;
esac

mkdir -p "${bin}" "${root}/src" "${crds}" "${stamps}"
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"
export CGO_ENABLED=0

log() { printf '[testenv %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

have() {
  local f
  for f in "$@"; do [[ -x "${bin}/${f}" ]] || return 1; done
}

# stamped NAME CONTENT: whether stamps/NAME holds CONTENT.
stamped() {
  [[ -f "${stamps}/$1" && "$(cat "${stamps}/$1")" == "$2" ]]
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

# module_file MODULE@VERSION FIELD prints a field (Dir, GoMod, Zip) of
# `go mod download -json`. Zip is there even when Dir is not: a module whose
# go.mod asks for a newer Go than this one is downloaded but not extracted.
module_file() {
  local out value
  out=$(cd "${root}/src" && GOFLAGS=-mod=mod go mod download -json "$1" 2>&1) || true
  value=$(sed -n 's/^[[:space:]]*"'"$2"'": "\(.*\)",\{0,1\}$/\1/p' <<<"${out}")
  [[ -n "${value}" && -e "${value}" ]] || { log "go mod download $1: no $2 in: ${out}"; return 1; }
  echo "${value}"
}

build_rollouts() {
  have rollouts-controller && stamped rollouts-controller "${ROLLOUTS_VERSION}" && return 0
  log "building the Argo Rollouts controller ${ROLLOUTS_VERSION}; about 7 minutes on 2 cores"
  local dir="${root}/src/argo-rollouts"
  rm -rf "${dir}" && mkdir -p "${dir}"
  cd "${dir}"
  # argo-rollouts pins k8s.io/* with replace directives, which only apply in
  # the main module, so go install refuses it. Copy them into a throwaway one.
  local gomod
  gomod=$(module_file "github.com/argoproj/argo-rollouts@${ROLLOUTS_VERSION}" GoMod)
  {
    echo "module autorollbackd.local/testenv/argo-rollouts"
    echo
    echo "go 1.26"
    echo
    sed -n -e '/^replace[[:space:]]*($/,/^)$/p' -e '/^replace[[:space:]][^(]/p' "${gomod}"
  } > go.mod
  grep -q 'k8s.io/client-go => ' go.mod || { log "no replace of k8s.io/client-go found in ${gomod}"; return 1; }
  # Its go.sum, which came with the verified module, spares a checksum
  # database lookup for each dependency.
  cp "$(module_file "github.com/argoproj/argo-rollouts@${ROLLOUTS_VERSION}" Dir)/go.sum" go.sum
  chmod u+w go.sum
  local cmd=github.com/argoproj/argo-rollouts/cmd/rollouts-controller
  go get "${cmd}@${ROLLOUTS_VERSION}"
  # The release's commit, as the proxy recorded it, so that --version
  # prints the tag as a release build does.
  local commit
  commit=$(cd "${root}/src" && go mod download -json "github.com/argoproj/argo-rollouts@${ROLLOUTS_VERSION}" | sed -n 's/^[[:space:]]*"Hash": "\([0-9a-f]*\)",\{0,1\}$/\1/p')
  local v=github.com/argoproj/argo-rollouts/utils/version
  go build -ldflags "-s -w -X ${v}.version=${ROLLOUTS_VERSION#v} -X ${v}.gitTag=${ROLLOUTS_VERSION} -X ${v}.gitCommit=${commit} -X ${v}.gitTreeState=clean" \
    -o "${bin}/rollouts-controller" "${cmd}"
  echo "${ROLLOUTS_VERSION}" > "${stamps}/rollouts-controller"
}

# fetch_crds SET MODULE@VERSION:PATH... copies each PATH from the module's
# zip into crds/SET, replacing what was there.
fetch_crds() {
  local set=$1; shift
  stamped "crds-${set}" "$*" && [[ -d "${crds}/${set}" ]] && return 0
  log "fetching the ${set} CRDs"
  local tmp="${crds}/.${set}.tmp" spec mod path zip
  rm -rf "${tmp}" && mkdir -p "${tmp}"
  for spec in "$@"; do
    mod=${spec%%:*} path=${spec#*:}
    zip=$(module_file "${mod}" Zip)
    "${unzip}" "${zip}" "${mod}/${path}" "${tmp}"
  done
  rm -rf "${crds:?}/${set}"
  mv "${tmp}" "${crds}/${set}"
  echo "$*" > "${stamps}/crds-${set}"
}

# unzip is a small Go program rather than a system tool, so that nothing
# beyond Go is needed: unzip ZIP NAME DIR writes the zip's NAME into DIR.
unzip="${root}/src/unzip/unzip"
build_unzip() {
  [[ -x "${unzip}" ]] && return 0
  local dir="${root}/src/unzip"
  rm -rf "${dir}" && mkdir -p "${dir}"
  cd "${dir}"
  cat > go.mod <<MOD
module autorollbackd.local/testenv/unzip

go 1.26
MOD
  cat > main.go <<'SRC'
// Command unzip writes one file of a zip archive into a directory.
package main

import (
	"archive/zip"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: unzip ZIP NAME DIR")
		os.Exit(2)
	}
	if err := extract(os.Args[1], os.Args[2], os.Args[3]); err != nil {
		fmt.Fprintln(os.Stderr, "unzip:", err)
		os.Exit(1)
	}
}

func extract(archive, name, dir string) error {
	r, err := zip.OpenReader(archive)
	if err != nil {
		return err
	}
	defer r.Close()
	in, err := r.Open(name)
	if err != nil {
		return fmt.Errorf("%s in %s: %w", name, archive, err)
	}
	defer in.Close()
	out, err := os.Create(filepath.Join(dir, filepath.Base(name)))
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
SRC
  go build -o unzip .
}

start=$(date +%s)
build_kwok
build_etcd
build_kubernetes
build_prometheus
build_alertmanager
build_helm
build_rollouts
build_unzip
fetch_crds argo-rollouts \
  "github.com/argoproj/argo-rollouts@${ROLLOUTS_VERSION}:manifests/crds/rollout-crd.yaml" \
  "github.com/argoproj/argo-rollouts@${ROLLOUTS_VERSION}:manifests/crds/analysis-run-crd.yaml" \
  "github.com/argoproj/argo-rollouts@${ROLLOUTS_VERSION}:manifests/crds/analysis-template-crd.yaml" \
  "github.com/argoproj/argo-rollouts@${ROLLOUTS_VERSION}:manifests/crds/cluster-analysis-template-crd.yaml" \
  "github.com/argoproj/argo-rollouts@${ROLLOUTS_VERSION}:manifests/crds/experiment-crd.yaml"
fetch_crds argo-cd \
  "github.com/argoproj/argo-cd/v3@${ARGOCD_VERSION}:manifests/crds/application-crd.yaml" \
  "github.com/argoproj/argo-cd/v3@${ARGOCD_VERSION}:manifests/crds/appproject-crd.yaml"
fetch_crds flux \
  "github.com/fluxcd/kustomize-controller@${FLUX_KUSTOMIZE_VERSION}:config/crd/bases/kustomize.toolkit.fluxcd.io_kustomizations.yaml" \
  "github.com/fluxcd/helm-controller@${FLUX_HELM_VERSION}:config/crd/bases/helm.toolkit.fluxcd.io_helmreleases.yaml"
# The sources a suspended Kustomization or HelmRelease is resumed by, in a
# set of their own so that adding them left the one above in place.
fetch_crds flux-source \
  "github.com/fluxcd/source-controller@${FLUX_SOURCE_VERSION}:config/crd/bases/source.toolkit.fluxcd.io_gitrepositories.yaml" \
  "github.com/fluxcd/source-controller@${FLUX_SOURCE_VERSION}:config/crd/bases/source.toolkit.fluxcd.io_ocirepositories.yaml" \
  "github.com/fluxcd/source-controller@${FLUX_SOURCE_VERSION}:config/crd/bases/source.toolkit.fluxcd.io_buckets.yaml" \
  "github.com/fluxcd/source-controller@${FLUX_SOURCE_VERSION}:config/crd/bases/source.toolkit.fluxcd.io_helmcharts.yaml"
log "ready in $(( $(date +%s) - start ))s: ${bin}"
echo "${bin}"
