#!/usr/bin/env bash
# The opencontainers runtime-tools validation suite, run against several OCI runtimes in one
# go, with each test's TAP counted: passed, failed, skipped, and tests that did not finish.
#
#   RUNTIME_TOOLS=/path/to/runtime-tools RUNTIMES="runc crun mm-runc" bench/oci-validation.sh
#
# LOGS_DIR=DIR keeps each test's TAP output there (RUNTIME.TEST.tap).
#
# RUNTIME_TOOLS is a runtime-tools source tree built with `make runtimetest
# validation-executables` (Go; `GOFLAGS=-mod=vendor` builds it offline from its vendor/
# directory). Debian packages only its Go library (golang-github-opencontainers-runtime-tools-dev,
# without validation/ or cmd/), and the Debian mirror this project's machines reach serves
# no source tarballs, so the tree comes from a checkout: upstream commit 0105384 (the one
# Debian 12 packages) builds with Debian's golang-go 1.19.
# Must run as root (the suite makes bundles with root-owned roots and real namespaces).
set -euo pipefail
: "${RUNTIME_TOOLS:?set RUNTIME_TOOLS to a built runtime-tools tree}"
RUNTIMES=${RUNTIMES:-runc crun}
PER_TEST_TIMEOUT=${PER_TEST_TIMEOUT:-120}
cd "$RUNTIME_TOOLS"
[ -x runtimetest ] || { echo "no runtimetest in $RUNTIME_TOOLS: run 'make runtimetest validation-executables' there" >&2; exit 1; }
mapfile -t tests < <(find validation -name '*.t' -type f | sort)
[ "${#tests[@]}" -gt 0 ] || { echo "no validation/*.t in $RUNTIME_TOOLS" >&2; exit 1; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
printf '%-12s %6s %6s %6s %6s %8s\n' runtime tests pass fail skip unfinished
for runtime in $RUNTIMES; do
    path=$(command -v "$runtime") || { echo "$runtime: not found" >&2; continue; }
    pass=0 fail=0 skip=0 unfinished=0
    : >"$out/$runtime.failed"
    for t in "${tests[@]}"; do
        log="$out/$runtime.$(basename "$t").tap"
        if ! RUNTIME=$path timeout "$PER_TEST_TIMEOUT" "./$t" >"$log" 2>&1; then
            # A test exits non-zero when one of its checks failed; only a missing plan
            # line ("1..N") means it did not finish.
            :
        fi
        [ -z "${LOGS_DIR:-}" ] || { mkdir -p "$LOGS_DIR" && cp "$log" "$LOGS_DIR/"; }
        grep -q '^1\.\.[0-9]' "$log" || { unfinished=$((unfinished + 1)); echo "$t: unfinished" >>"$out/$runtime.failed"; }
        p=$(grep -E '^ok [0-9]+' "$log" | grep -vc '# SKIP' || true)
        s=$(grep -cE '^ok [0-9]+.*# SKIP' "$log" || true)
        f=$(grep -cE '^not ok [0-9]+' "$log" || true)
        [ "$f" -eq 0 ] || echo "$t: $f failed" >>"$out/$runtime.failed"
        pass=$((pass + p)) fail=$((fail + f)) skip=$((skip + s))
    done
    printf '%-12s %6s %6s %6s %6s %8s\n' "$runtime" "${#tests[@]}" "$pass" "$fail" "$skip" "$unfinished"
    cp "$out/$runtime.failed" "${RESULTS_DIR:-/tmp}/oci-validation.$runtime.failed"
done
echo "(failing tests per runtime: ${RESULTS_DIR:-/tmp}/oci-validation.RUNTIME.failed)"
