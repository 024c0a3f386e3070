#!/usr/bin/env bash
# Installs NVIDIA's NVRTC (the CUDA 13 runtime compiler, PyPI wheel `nvidia-cuda-nvrtc`) into a
# local virtual environment `.venv` at the repository root and prints, on stdout, the directory
# holding `libnvrtc.so.13`, so that the caller can do
#
#     export LD_LIBRARY_PATH="$(bash .ci/install-nvrtc.sh):${LD_LIBRARY_PATH:-}"
#
# and the ttconv-cuda NVRTC test really compiles every kernel, to a CUBIN for sm_90 and to PTX
# (no GPU or driver needed).
#
# Idempotent and quick once installed (no network access then). Never fails the caller: when the
# wheel cannot be installed (no python3, no network, ...) it prints a warning on stderr, nothing on
# stdout, and exits 0, and the NVRTC test skips with a printed reason.
#
# The version is pinned to CUDA 13.0: the backend loads CUBINs, but falls back to PTX for devices
# newer than the NVRTC, and PTX written by a newer NVRTC carries a PTX ISA version that a CUDA 13.0
# driver (e.g. 580) cannot load. Override with NVRTC_WHEEL_SPEC if needed.
set -u

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${root}/.venv"
spec="${NVRTC_WHEEL_SPEC:-nvidia-cuda-nvrtc==13.0.88}"

warn() { echo "install-nvrtc: warning: $*" >&2; }

# Prints the directory of libnvrtc.so.13 inside the venv, if there is one.
find_lib() {
    [ -d "${venv}/lib" ] || return 1
    local lib
    lib="$(find "${venv}/lib" -path '*/nvidia/*' -name 'libnvrtc.so.13' 2>/dev/null | head -n 1)"
    [ -n "${lib}" ] || return 1
    dirname "${lib}"
}

if dir="$(find_lib)"; then
    echo "${dir}"
    exit 0
fi

if ! command -v python3 >/dev/null 2>&1; then
    warn "python3 not found; the NVRTC test will skip"
    exit 0
fi

if [ ! -x "${venv}/bin/python" ]; then
    if ! python3 -m venv "${venv}" >&2; then
        warn "could not create ${venv}; the NVRTC test will skip"
        exit 0
    fi
fi

if ! "${venv}/bin/python" -m pip install --quiet --disable-pip-version-check \
    --timeout 30 --retries 1 "${spec}" >&2; then
    warn "pip could not install ${spec}; the NVRTC test will skip"
    exit 0
fi

if dir="$(find_lib)"; then
    echo "${dir}"
else
    warn "${spec} installed but libnvrtc.so.13 not found under ${venv}; the NVRTC test will skip"
fi
exit 0
