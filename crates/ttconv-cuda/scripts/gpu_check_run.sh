#!/usr/bin/env bash
# ttconv GPU check, run in ONE call on a machine with an NVIDIA GPU (no Rust toolchain needed).
# `cargo xtask gpu-check` copies this file as run.sh into the folder it prepares; README.txt there
# says what the folder holds and how to call it.
#
#   bash gpu-check/run.sh [--dry-run] [--force] [--sync-launches]
#
# Steps, each under `timeout`, none aborting the run (failures are recorded and the script goes on):
#   setup    check SHA256SUMS, unpack binaries.tar.xz (and the carried NVRTC), install the tensorly /
#            tensorly-torch wheels to a private folder, choose libnvrtc / libcublas (cuda_libs.py),
#            make a folder of links to exactly those (unversioned names included) and put it FIRST
#            on LD_LIBRARY_PATH; says "no cuBLAS" here when there is none; TTCONV_REQUIRE_CUDA=1 so
#            that no CUDA test can skip
#   smoke    the smoke test first (allocate, launch, copy back, compare; prints the CUDA library
#            files the process loaded, from /proc/self/maps): an environment failure shows in
#            seconds, and the tests and the bench are then skipped (they would fail the same way)
#   tests    every other ttconv-cuda test binary, one test thread each (--test-threads=1)
#   bench    gpu_bench: the suite on the GPU, JSON to $OUT/gpu_bench.json
#   anchor   torch_gpu_anchor.py: TensorLy-Torch and cuDNN on the same cases, $OUT/torch_anchor.json
#   report   report.py: the final table (also $OUT/report.md), printed LAST
# The whole run stays under TTC_DEADLINE_S (330 s): later steps keep a reserve, so the table is
# always printed, and a 15-minute device lease has time for a rerun. Exit status: 0 when every
# step passed and every target was met, else 1; 2 when there is no GPU (nothing measured;
# --force runs the steps anyway, as a plumbing test).
#
# --dry-run: set up, detect the GPU and libraries, print the library folder and the plan, run
#   nothing else.
# --sync-launches: the tests and gpu_bench wait after every kernel launch (the backend's debugging
#   option, passed as TTCONV_TEST_SYNC_LAUNCHES=1 to the tests and --sync-each-launch to
#   gpu_bench), so a faulting kernel is named by its own error; timings are then meaningless.
# Environment: OUT (results folder; default ./out beside this script), TTC_WORK (/tmp/ttconv-gpu-check),
# TTC_BATCH (32), TTC_BATCH3D (8), TTC_DEADLINE_S (330), TTC_TEST_TIMEOUT_S (90 per binary),
# TTC_BENCH_TIMEOUT_S (150), TTC_ANCHOR_TIMEOUT_S (120), PYTHON (python3: the one with PyTorch).
set -u

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT_DIR="${OUT:-${HERE}/out}"
WORK="${TTC_WORK:-/tmp/ttconv-gpu-check}"
BATCH="${TTC_BATCH:-32}"
BATCH3D="${TTC_BATCH3D:-8}"
DEADLINE_S="${TTC_DEADLINE_S:-330}"
SMOKE_TIMEOUT_S=60
TEST_TIMEOUT_S="${TTC_TEST_TIMEOUT_S:-90}"
BENCH_TIMEOUT_S="${TTC_BENCH_TIMEOUT_S:-150}"
ANCHOR_TIMEOUT_S="${TTC_ANCHOR_TIMEOUT_S:-120}"
REPORT_TIMEOUT_S=30
# Minimum time kept for the steps after the tests, the bench and the anchor.
BENCH_MIN_S=60
ANCHOR_MIN_S=60
REPORT_MIN_S=20
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1 RUST_BACKTRACE=1 PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1

DRY_RUN=0
FORCE=0
SYNC_LAUNCHES=0
for arg in "$@"; do
    case "${arg}" in
        --dry-run) DRY_RUN=1 ;;
        --force) FORCE=1 ;;
        --sync-launches) SYNC_LAUNCHES=1 ;;
        -h | --help)
            sed -n '2,34p' "${BASH_SOURCE[0]}"
            exit 0
            ;;
        *)
            echo "run.sh: unknown argument ${arg} (see --help)" >&2
            exit 2
            ;;
    esac
done

mkdir -p "${OUT_DIR}" "${WORK}"
OUT_DIR="$(cd "${OUT_DIR}" && pwd)"
LOG="${OUT_DIR}/run.log"
: >"${LOG}"
T0=${SECONDS}
STEPS=()
FAILED=()

say() { echo "$*" | tee -a "${LOG}"; }
# logged CMD...: runs CMD, its output on the terminal and in the log; returns CMD's status.
logged() {
    "$@" 2>&1 | tee -a "${LOG}"
    return "${PIPESTATUS[0]}"
}
elapsed() { echo $((SECONDS - T0)); }

# record NAME STATUS SECONDS
record() {
    STEPS+=("$(printf '%-28s %-22s %5ss' "$1" "$2" "$3")")
    case "$2" in
        ok*) ;;
        *) FAILED+=("$1") ;;
    esac
}

# run_step NAME CAP_S RESERVE_S CMD...: runs CMD under `timeout min(CAP, time left - RESERVE)`,
# output to the terminal and the log; records the outcome and never aborts the script.
run_step() {
    local name="$1" cap="$2" reserve="$3"
    shift 3
    local left=$((DEADLINE_S - (SECONDS - T0) - reserve))
    local t=${cap}
    ((left < t)) && t=${left}
    if ((t < 5)); then
        say "=== [${name}] SKIPPED: out of time ($(elapsed) s used of ${DEADLINE_S})"
        record "${name}" "skipped (no time)" 0
        return 0
    fi
    say "=== [${name}] timeout ${t}s: $*"
    local start=${SECONDS}
    timeout -k 5 "${t}" "$@" 2>&1 | tee -a "${LOG}"
    local rc=${PIPESTATUS[0]}
    local dur=$((SECONDS - start))
    local status="ok"
    if ((rc == 124 || rc == 137)); then
        status="TIMEOUT after ${t}s"
    elif ((rc != 0)); then
        status="FAILED (exit ${rc})"
    fi
    say "=== [${name}] ${status} in ${dur} s"
    record "${name}" "${status}" "${dur}"
    return 0
}

summary() {
    say ""
    say "=== steps ($(elapsed) s in all)"
    local s
    for s in "${STEPS[@]}"; do say "  ${s}"; done
    if ((${#FAILED[@]} > 0)); then
        say "  FAILED or skipped: ${FAILED[*]}"
    else
        say "  every step passed"
    fi
    say ""
}

# ---------------------------------------------------------------------------------------------
# Setup
# ---------------------------------------------------------------------------------------------
say "=== ttconv GPU check ($(date -u +%Y-%m-%dT%H:%M:%SZ) on $(cat /proc/sys/kernel/hostname 2>/dev/null), $(uname -m), folder ${HERE})"
[ -f "${HERE}/BUILD_INFO.txt" ] && tee -a "${LOG}" <"${HERE}/BUILD_INFO.txt"
say "results folder: ${OUT_DIR}; work folder: ${WORK}; batch ${BATCH} (3-D ${BATCH3D}); deadline ${DEADLINE_S} s"
if command -v nvidia-smi >/dev/null 2>&1; then
    timeout 20 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm \
        --format=csv,noheader 2>&1 | tee -a "${LOG}"
else
    say "nvidia-smi: not found"
fi
say "python: $(command -v "${PY}") ($("${PY}" --version 2>&1))"

if command -v sha256sum >/dev/null 2>&1 && [ -f "${HERE}/SHA256SUMS" ]; then
    # shellcheck disable=SC2016 # $1 is expanded by the inner bash
    if logged bash -c 'cd "$1" && sha256sum -c --quiet SHA256SUMS' checksums "${HERE}"; then
        say "SHA256SUMS: every file intact"
        record "setup: checksums" ok 0
    else
        say "SHA256SUMS: MISMATCH (the folder was changed after cargo xtask gpu-check)"
        record "setup: checksums" "FAILED" 0
    fi
fi

# shellcheck disable=SC2329 # called through `logged`
untar() { "${PY}" -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2], filter="data")' "$1" "$2"; }

rm -rf "${WORK}/payload" "${WORK}/nvrtc" "${WORK}/site"
mkdir -p "${WORK}/payload"
if logged untar "${HERE}/binaries.tar.xz" "${WORK}/payload" && [ -d "${WORK}/payload/tests" ]; then
    chmod +x "${WORK}"/payload/tests/* "${WORK}"/payload/bin/* 2>/dev/null
    say "binaries: $(cd "${WORK}/payload" && echo tests/* bin/*)"
    record "setup: binaries" ok 0
else
    say "binaries: could not unpack ${HERE}/binaries.tar.xz"
    record "setup: binaries" "FAILED" 0
fi

PREFER=()
for nv in "${HERE}"/nvrtc-*.tar.xz; do
    [ -f "${nv}" ] || continue
    mkdir -p "${WORK}/nvrtc"
    if logged untar "${nv}" "${WORK}/nvrtc"; then
        PREFER=(--prefer-nvrtc "${WORK}/nvrtc")
        say "carried NVRTC: $(basename "${nv}") unpacked to ${WORK}/nvrtc"
    else
        say "carried NVRTC: could not unpack ${nv}"
        record "setup: nvrtc" "FAILED" 0
    fi
done

if ls "${HERE}"/wheels/*.whl >/dev/null 2>&1; then
    if logged "${PY}" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "${WORK}/site" "${HERE}"/wheels/*.whl; then
        export PYTHONPATH="${WORK}/site${PYTHONPATH:+:${PYTHONPATH}}"
        say "wheels: $(cd "${HERE}/wheels" && echo ./*.whl) installed to ${WORK}/site"
        record "setup: wheels" ok 0
    else
        say "wheels: pip install failed"
        record "setup: wheels" "FAILED" 0
    fi
fi

TTC_GPU_COUNT=0
TTC_GPU_REASON="cuda_libs.py did not run"
TTC_NVRTC_DIR=""
TTC_CUBLAS_DIR=""
TTC_CUBLAS_MAJOR=""
TTC_NVRTC_WARNING=""
TTC_LIB_DIR=""
LIB_DIR="${WORK}/lib"
if libs="$("${PY}" "${HERE}/scripts/cuda_libs.py" "${PREFER[@]}" --link-dir "${LIB_DIR}" 2>"${WORK}/cuda_libs.err")"; then
    eval "${libs}"
    echo "${libs}" >>"${LOG}"
fi
tee -a "${LOG}" <"${WORK}/cuda_libs.err"
# The link folder goes FIRST: it holds the unversioned names (libnvrtc.so, libcublas.so,
# libcublasLt.so) that cudarc tries before the versioned ones, so no copy in the loader cache wins.
if [ -n "${TTC_LIB_DIR}" ]; then
    export LD_LIBRARY_PATH="${TTC_LIB_DIR}${LD_LIBRARY_PATH:+:${LD_LIBRARY_PATH}}"
    say "library folder ${TTC_LIB_DIR} (first on LD_LIBRARY_PATH):"
    for l in "${TTC_LIB_DIR}"/*; do
        [ -L "${l}" ] && say "  $(basename "${l}") -> $(readlink "${l}")"
    done
else
    say "library folder: NOT MADE (cuda_libs.py failed; see above)"
fi
say "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
[ -n "${TTC_NVRTC_WARNING}" ] && say "WARNING: ${TTC_NVRTC_WARNING}"
if [ -z "${TTC_NVRTC_DIR}" ]; then
    say "no NVRTC: no libnvrtc.so.13 found; every CUDA test will fail (the kernels cannot compile)"
fi
if [ -z "${TTC_CUBLAS_DIR}" ]; then
    say "no cuBLAS: neither libcublas.so.13 nor libcublas.so.12 with its libcublasLt was found; every CUDA test will fail with NoCublas"
else
    say "cuBLAS: CUDA ${TTC_CUBLAS_MAJOR} from ${TTC_CUBLAS_DIR}"
fi

HAVE_GPU=0
if [ "${TTC_GPU_COUNT}" -gt 0 ] 2>/dev/null; then
    HAVE_GPU=1
    export TTCONV_REQUIRE_CUDA=1 TTCONV_REQUIRE_NVRTC=1
    say "GPU: ${TTC_GPU_COUNT} device(s): ${TTC_GPU_NAMES:-?}; driver CUDA ${TTC_DRIVER_CUDA:-?}; NVRTC ${TTC_NVRTC_VERSION:-none}; TTCONV_REQUIRE_CUDA=1"
else
    say "NO GPU: ${TTC_GPU_REASON}"
fi

SMOKE="${WORK}/payload/tests/smoke"
TESTS=()
for t in "${WORK}"/payload/tests/*; do
    [ -x "${t}" ] && [ "${t}" != "${SMOKE}" ] && TESTS+=("${t}")
done
TEST_ARGS=(-q --test-threads=1)
BENCH=("${WORK}/payload/bin/gpu_bench" --suite "${HERE}/suite.json" --json "${OUT_DIR}/gpu_bench.json" --batch "${BATCH}" --batch3d "${BATCH3D}")
if ((SYNC_LAUNCHES)); then
    export TTCONV_TEST_SYNC_LAUNCHES=1
    BENCH+=(--sync-each-launch)
    say "--sync-launches: every kernel launch is followed by a synchronize (tests and gpu_bench)"
fi
ANCHOR=("${PY}" "${HERE}/scripts/torch_gpu_anchor.py" --suite "${HERE}/suite.json" --out "${OUT_DIR}/torch_anchor.json" --batch "${BATCH}" --batch3d "${BATCH3D}")
REPORT=("${PY}" "${HERE}/scripts/report.py" --ours "${OUT_DIR}/gpu_bench.json" --anchor "${OUT_DIR}/torch_anchor.json" --md "${OUT_DIR}/report.md")

plan() {
    say "plan (deadline ${DEADLINE_S} s):"
    say "  smoke   ${SMOKE} --test-threads=1 --nocapture   (timeout ${SMOKE_TIMEOUT_S} s; first)"
    local t
    for t in "${TESTS[@]}"; do say "  tests   ${t} ${TEST_ARGS[*]}   (timeout ${TEST_TIMEOUT_S} s)"; done
    say "  bench   ${BENCH[*]}   (timeout ${BENCH_TIMEOUT_S} s)"
    say "  anchor  ${ANCHOR[*]}   (timeout ${ANCHOR_TIMEOUT_S} s)"
    say "  report  ${REPORT[*]}"
}

if ((DRY_RUN)); then
    plan
    say "--dry-run: nothing run ($(elapsed) s)"
    exit 0
fi
if ((!HAVE_GPU && !FORCE)); then
    say "no GPU here: showing gpu_bench's own message, then stopping (--force runs every step anyway)"
    logged timeout 60 "${BENCH[@]}"
    say "gpu_bench: exit status $? (2 = no usable GPU)"
    plan
    say "run.sh: NO GPU (${TTC_GPU_REASON}); nothing measured"
    exit 2
fi

# ---------------------------------------------------------------------------------------------
# Tests, bench, anchor
# ---------------------------------------------------------------------------------------------
LATER_MIN_S=$((BENCH_MIN_S + ANCHOR_MIN_S + REPORT_MIN_S))
nfailed=${#FAILED[@]}
if [ -x "${SMOKE}" ]; then
    run_step "smoke" "${SMOKE_TIMEOUT_S}" "${LATER_MIN_S}" "${SMOKE}" --test-threads=1 --nocapture
else
    say "=== [smoke] MISSING: ${SMOKE} is not in the binaries"
    record "smoke" "FAILED (missing)" 0
fi
rm -f "${OUT_DIR}/gpu_bench.json" "${OUT_DIR}/torch_anchor.json"
if ((${#FAILED[@]} > nfailed)); then
    say "=== the smoke test failed: the CUDA environment does not work, so the tests and gpu_bench are skipped (they would fail the same way); fix the environment (see the smoke output above) and rerun"
    for t in "${TESTS[@]}"; do record "test $(basename "${t}")" "skipped (smoke failed)" 0; done
    record "bench" "skipped (smoke failed)" 0
else
    for t in "${TESTS[@]}"; do
        run_step "test $(basename "${t}")" "${TEST_TIMEOUT_S}" "${LATER_MIN_S}" "${t}" "${TEST_ARGS[@]}"
    done
    run_step "bench" "${BENCH_TIMEOUT_S}" $((ANCHOR_MIN_S + REPORT_MIN_S)) "${BENCH[@]}"
fi
run_step "anchor" "${ANCHOR_TIMEOUT_S}" "${REPORT_MIN_S}" "${ANCHOR[@]}"

# ---------------------------------------------------------------------------------------------
# Summary, then the table LAST
# ---------------------------------------------------------------------------------------------
summary
echo "=== report" >>"${LOG}"
timeout -k 5 "${REPORT_TIMEOUT_S}" "${REPORT[@]}" 2>&1 | tee -a "${LOG}"
report_rc=${PIPESTATUS[0]}
if ((${#FAILED[@]} > 0 || report_rc != 0)); then
    exit 1
fi
((HAVE_GPU)) || exit 2
exit 0
