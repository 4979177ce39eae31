#!/usr/bin/env bash
# Runs the benchmarks of autorollbackd (see bench/README.md) and writes
# bench/RESULTS.md.
#
#   bench/run.sh                       every part; writes bench/RESULTS.md
#   bench/run.sh alert-to-action       one or more parts (alert-to-action,
#   bench/run.sh intake go             intake, go, scale, binary); prints
#                                      them to stdout and leaves
#                                      bench/RESULTS.md alone
#
# Environment:
#   BENCH_RESULTS  file to write instead of bench/RESULTS.md (a full run) or
#                  stdout (a partial run)
#   BENCH_KEEP=1   keep the work directory (daemon logs, samples.csv, hey
#                  output) instead of deleting it
#   BENCH_N        rollbacks per method in alert-to-action (default 200)
#   BENCH_DURATION how long hey drives each intake case (default 10s)
#   BENCH_SCALE_DEPLOYMENTS, BENCH_SCALE_NAMESPACES, BENCH_SCALE_ALERTS
#                  the scale part's Deployments, namespaces and burst
#                  (default 10000, 500, 1000)
#   BENCH_BASE     commit the Go benchmarks are compared with (default: the
#                  commit that last wrote bench/RESULTS.md; none: no comparison)
#   HEY_VERSION, BENCHSTAT_VERSION  versions go install fetches
#
# It builds what it needs: the test environment with hack/testenv.sh (cached
# outside the repository), the daemon and the benchmark programs with go
# build, hey and benchstat with go install into the work directory. Nothing
# in the repository changes but the results file.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "${root}"

HEY_VERSION=${HEY_VERSION:-v0.1.5}
BENCHSTAT_VERSION=${BENCHSTAT_VERSION:-v0.0.0-20260908200009-22c9c6c9d4da}
BENCH_N=${BENCH_N:-200}
BENCH_DURATION=${BENCH_DURATION:-10s}
BENCH_SCALE_DEPLOYMENTS=${BENCH_SCALE_DEPLOYMENTS:-10000}
BENCH_SCALE_NAMESPACES=${BENCH_SCALE_NAMESPACES:-500}
BENCH_SCALE_ALERTS=${BENCH_SCALE_ALERTS:-1000}

all_parts=(alert-to-action intake go scale binary)
if (($# == 0)); then
  parts=("${all_parts[@]}")
  out=${BENCH_RESULTS:-${root}/bench/RESULTS.md}
else
  parts=("$@")
  out=${BENCH_RESULTS:-/dev/stdout}
  for p in "${parts[@]}"; do
    case "${p}" in
      alert-to-action | intake | go | scale | binary) ;;
      *) echo "bench/run.sh: unknown part ${p} (want: ${all_parts[*]})" >&2; exit 2 ;;
    esac
  done
fi

log() { printf '[run.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# Part 3 compares the Go benchmarks with a base commit: BENCH_BASE, or by
# default the commit that last wrote bench/RESULTS.md (BENCH_BASE=none: no
# comparison).
bench_pkgs=(./internal/logging/ ./internal/policy/ ./internal/webhook/ ./internal/workload/)
base=${BENCH_BASE:-$(git log -1 --format=%H -- bench/RESULTS.md 2>/dev/null || true)}
[[ "${base}" == none ]] && base=""
base_label=""
[[ -n "${base}" ]] && base_label=$(git rev-parse --short "${base}")

work=$(mktemp -d "${TMPDIR:-/tmp}/autorollbackd-bench.XXXXXX")
cleanup() {
  [[ -d "${work}/base" ]] && git worktree remove --force "${work}/base" 2>/dev/null
  if [[ "${BENCH_KEEP:-}" == 1 ]]; then
    log "work directory kept: ${work}"
  else
    rm -rf "${work}"
  fi
}
trap cleanup EXIT
mkdir -p "${work}/bin" "${work}/md"

started=$(date +%s)
commit=$(git rev-parse HEAD)
dirty=""
[[ -n "$(git status --porcelain -- . ':!bench' 2>/dev/null)" ]] && dirty=" (built with uncommitted changes outside bench/)"
started_utc=$(date -u +%Y-%m-%dT%H:%M:%SZ)
load_start=$(cut -d' ' -f1-3 /proc/loadavg)

log "test environment: hack/testenv.sh (cached after the first build)"
TESTENV_BIN=$(hack/testenv.sh | tail -n1)
export TESTENV_BIN

log "building autorollbackd and the benchmark programs into ${work}/bin"
go build -o "${work}/bin/autorollbackd" ./cmd/autorollbackd
go build -o "${work}/bin/" ./bench/alerttoaction ./bench/intake ./bench/ceiling ./bench/scale

log "installing hey ${HEY_VERSION} and benchstat ${BENCHSTAT_VERSION} into ${work}/bin"
# From the work directory, so that no go.mod is consulted, let alone changed.
(
  cd "${work}"
  GOBIN="${work}/bin" go install "github.com/rakyll/hey@${HEY_VERSION}"
  GOBIN="${work}/bin" go install "golang.org/x/perf/cmd/benchstat@${BENCHSTAT_VERSION}"
)

for part in "${parts[@]}"; do
  t0=$(date +%s)
  case "${part}" in
    alert-to-action)
      log "part 1: alert to action (${BENCH_N} rollbacks per method; about 7 minutes)"
      mkdir -p "${work}/alerttoaction"
      timeout -k 2m 14m "${work}/bin/alerttoaction" -daemon "${work}/bin/autorollbackd" -n "${BENCH_N}" \
        -work "${work}/alerttoaction" -out "${work}/md/1.md"
      ;;
    intake)
      log "part 2: webhook intake (${BENCH_DURATION} per case; about 4 minutes)"
      mkdir -p "${work}/intake"
      timeout -k 2m 9m "${work}/bin/intake" -daemon "${work}/bin/autorollbackd" -ceiling "${work}/bin/ceiling" \
        -hey "${work}/bin/hey" -duration "${BENCH_DURATION}" -work "${work}/intake" -out "${work}/md/2.md"
      ;;
    go)
      log "part 3: Go benchmarks, this commit against ${base_label} (about 4 minutes)"
      load0=$(cut -d' ' -f1-3 /proc/loadavg)
      head_label=$(git rev-parse --short HEAD)
      gobench() { go test -run='^$' -bench=. -benchmem -count=6 -timeout 10m "${bench_pkgs[@]}"; }
      if [[ -n "${base}" ]]; then
        # The base, checked out beside the repository; only packages it has.
        git worktree add --quiet --detach "${work}/base" "${base}"
        (
          cd "${work}/base"
          pkgs=()
          for p in "${bench_pkgs[@]}"; do [[ -d "${p}" ]] && pkgs+=("${p}"); done
          go test -run='^$' -bench=. -benchmem -count=6 -timeout 10m "${pkgs[@]}"
        ) > "${work}/gobench-base.txt"
        git worktree remove --force "${work}/base"
      fi
      gobench > "${work}/gobench.txt"
      # Labelled with the commits rather than the temporary files' paths.
      if [[ -n "${base}" ]]; then
        (cd "${work}" && bin/benchstat "${base_label}=gobench-base.txt" "${head_label}=gobench.txt") > "${work}/benchstat.txt"
      else
        (cd "${work}" && bin/benchstat "${head_label}=gobench.txt") > "${work}/benchstat.txt"
      fi
      {
        echo "## 3. Go benchmarks"
        echo
        echo "\`go test -run='^\$' -bench=. -benchmem -count=6 ${bench_pkgs[*]}\` at ${base_label:-no base} and at ${head_label}, compared by benchstat (columns: the commits; a package the base lacks has no base column)."
        echo "Load average (1, 5, 15 min) at start: ${load0}; at end: $(cut -d' ' -f1-3 /proc/loadavg)."
        echo
        echo '```text'
        cat "${work}/benchstat.txt"
        echo '```'
        echo
      } > "${work}/md/3.md"
      ;;
    scale)
      log "part 4: scale (${BENCH_SCALE_DEPLOYMENTS} Deployments in ${BENCH_SCALE_NAMESPACES} namespaces, a burst of ${BENCH_SCALE_ALERTS} alerts per configuration; about 11 minutes)"
      mkdir -p "${work}/scale"
      timeout -k 2m 20m "${work}/bin/scale" -daemon "${work}/bin/autorollbackd" -deployments "${BENCH_SCALE_DEPLOYMENTS}" \
        -namespaces "${BENCH_SCALE_NAMESPACES}" -alerts "${BENCH_SCALE_ALERTS}" -timeout 18m \
        -work "${work}/scale" -out "${work}/md/4.md"
      ;;
    binary)
      log "part 5: binary size"
      go build -ldflags '-s -w' -o "${work}/bin/autorollbackd-stripped" ./cmd/autorollbackd
      go build -tags helm -ldflags '-s -w' -o "${work}/bin/autorollbackd-helm-stripped" ./cmd/autorollbackd
      size=$(stat -c %s "${work}/bin/autorollbackd-stripped")
      plain=$(stat -c %s "${work}/bin/autorollbackd")
      helmsize=$(stat -c %s "${work}/bin/autorollbackd-helm-stripped")
      {
        echo "## 5. Binary size"
        echo
        echo "\`go build -ldflags '-s -w' ./cmd/autorollbackd\` (symbol table and DWARF stripped, as the container image builds it), $(go env GOOS)/$(go env GOARCH)."
        echo
        echo "| build | bytes | MiB |"
        echo "|---|---:|---:|"
        awk -v b="${size}" 'BEGIN { printf "| **stripped** | %d | **%.1f** |\n", b, b / 1048576 }'
        awk -v b="${plain}" 'BEGIN { printf "| `go build` (not stripped) | %d | %.1f |\n", b, b / 1048576 }'
        awk -v b="${helmsize}" 'BEGIN { printf "| `-tags helm`, stripped (the `-helm` image, with the Helm SDK) | %d | %.1f |\n", b, b / 1048576 }'
        echo
        awk -v b="${size}" -v t=40 'BEGIN {
          m = b / 1048576
          if (m < t) printf "**Target: under %d MiB stripped.** %.1f MiB: **met** (%.2f× the bound).\n", t, m, m / t
          else printf "**Target: under %d MiB stripped.** %.1f MiB: **not met**: %.2f× the bound, %.1f MiB over.\n", t, m, m / t, m - t
        }'
        echo
      } > "${work}/md/5.md"
      ;;
  esac
  log "part ${part} done in $(($(date +%s) - t0))s"
done

version_of() { go version -m "$1" | awk '$1 == "mod" { print $2 " " $3; exit }'; }

{
  if (($# == 0)); then
    echo "# Benchmark results"
    echo
    echo "Written by \`bench/run.sh\`; rerun it rather than editing the numbers. What each part measures and how to read it: [README.md](README.md)."
    echo
    echo "| | |"
    echo "|---|---|"
    echo "| date | ${started_utc} |"
    echo "| commit | \`${commit}\`${dirty} |"
    echo "| go | $(go version) |"
    echo "| CPU | $(nproc) cores: $(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//') |"
    echo "| kernel | $(uname -sr) |"
    echo "| test environment | $(basename "$(dirname "${TESTENV_BIN}")") |"
    echo "| hey | $(version_of "${work}/bin/hey") |"
    echo "| benchstat | $(version_of "${work}/bin/benchstat") |"
    echo "| load average at start | ${load_start} (1, 5, 15 min; other work on the machine skews every number) |"
    echo "| whole run | $(($(date +%s) - started))s |"
    echo
    echo '`free -h`:'
    echo
    echo '```text'
    free -h
    echo '```'
    echo
  fi
  for part in "${parts[@]}"; do
    case "${part}" in
      alert-to-action) cat "${work}/md/1.md" ;;
      intake) cat "${work}/md/2.md" ;;
      go) cat "${work}/md/3.md" ;;
      scale) cat "${work}/md/4.md" ;;
      binary) cat "${work}/md/5.md" ;;
    esac
  done
} > "${work}/results.md"
if [[ "${out}" == /dev/stdout ]]; then
  cat "${work}/results.md"
else
  cp "${work}/results.md" "${out}"
  log "wrote ${out}"
fi
