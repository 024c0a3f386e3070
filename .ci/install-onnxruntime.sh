#!/usr/bin/env bash
# Installs ONNX Runtime's shared library from its PyPI wheel (`onnxruntime`, CPU build, no
# Python dependencies needed) into the local virtual environment `.venv` at the repository root
# and prints, on stdout, the path of `libonnxruntime.so.*`, so that the caller can do
#
#     export TTCONV_ONNXRUNTIME="$(bash .ci/install-onnxruntime.sh)"
#
# and the ttconv-onnx tests run the original and the compressed models in ONNX Runtime. The
# tests also find the library under `.venv` by themselves once this script has run.
#
# The version is pinned to the C API the `ort` crate is built for (ort 2.0.0-rc.15: API 31,
# ONNX Runtime 1.31). Idempotent and quick once installed. Never fails the caller: when the wheel
# cannot be installed it warns on stderr, prints nothing and exits 0, and the runtime tests skip
# with a printed reason.
set -u

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${root}/.venv"
spec="onnxruntime==1.31.1"

warn() { echo "install-onnxruntime: warning: $*" >&2; }

find_lib() {
    [ -d "${venv}/lib" ] || return 1
    local lib
    lib="$(find "${venv}/lib" -path '*/onnxruntime/capi/*' -name 'libonnxruntime.so.1.31*' 2>/dev/null | head -n 1)"
    [ -n "${lib}" ] || return 1
    echo "${lib}"
}

if lib="$(find_lib)"; then
    echo "${lib}"
    exit 0
fi

if ! command -v python3 >/dev/null 2>&1; then
    warn "python3 not found; the ONNX Runtime tests will skip"
    exit 0
fi

if [ ! -x "${venv}/bin/python" ]; then
    if ! python3 -m venv "${venv}" >&2; then
        warn "could not create ${venv}; the ONNX Runtime tests will skip"
        exit 0
    fi
fi

# --no-deps: only the shared library is used, not the Python bindings (numpy, protobuf, ...).
if ! "${venv}/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
    --timeout 30 --retries 1 "${spec}" >&2; then
    warn "pip could not install ${spec}; the ONNX Runtime tests will skip"
    exit 0
fi

if lib="$(find_lib)"; then
    echo "${lib}"
else
    warn "${spec} installed but libonnxruntime.so.1.31* not found under ${venv}; the ONNX Runtime tests will skip"
fi
exit 0
