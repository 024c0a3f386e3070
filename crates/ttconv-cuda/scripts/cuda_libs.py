#!/usr/bin/env python3
"""Finds what ttconv-cuda loads at run time on this machine: the CUDA driver and its GPUs, a
`libnvrtc.so.13` the driver can use, and `libcublas.so.13` (with `libcublasLt.so.13`).

    eval "$(python3 cuda_libs.py --prefer-nvrtc DIR)"

prints shell assignments on stdout (values quoted) and a human summary on stderr:

    TTC_GPU_COUNT       number of CUDA devices (0 when there is no driver or no device)
    TTC_GPU_REASON      why there is no usable GPU ('' when there is one)
    TTC_GPU_NAMES       the devices' names, '; '-separated
    TTC_DRIVER_CUDA     the CUDA version the driver supports, e.g. 13.0 ('' without a driver)
    TTC_NVRTC_DIR       folder holding the chosen libnvrtc.so.13 ('' when none was found)
    TTC_NVRTC_VERSION   its version, e.g. 13.0
    TTC_NVRTC_WARNING   set when the chosen NVRTC is newer than the driver (its PTX will not load)
    TTC_CUBLAS_DIR      folder holding libcublas.so.13 and libcublasLt.so.13 ('' when none)

Where NVRTC is looked for, in order: --prefer-nvrtc folders (a carried copy), the nvidia wheels
of every site-packages folder of this python (PyTorch's bundled CUDA libraries), the folders of
LD_LIBRARY_PATH, /usr/local/cuda. The first NVRTC whose version is not newer than the driver's
CUDA version wins (PTX from a newer NVRTC carries a PTX ISA the driver cannot load).
"""
import argparse
import ctypes
import glob
import os
import shlex
import site
import sys


def site_dirs():
    dirs = list(sys.path)
    try:
        dirs += site.getsitepackages()
    except Exception:
        pass
    try:
        dirs.append(site.getusersitepackages())
    except Exception:
        pass
    out = []
    for d in dirs:
        if d and os.path.isdir(d) and d not in out:
            out.append(d)
    return out


def candidate_dirs(lib, prefer):
    """Folders holding `lib`, most preferred first, without duplicates."""
    found = []

    def add(d):
        d = os.path.realpath(d)
        if os.path.isfile(os.path.join(d, lib)) and d not in found:
            found.append(d)

    for d in prefer:
        add(d)
        for p in glob.glob(os.path.join(d, "**", lib), recursive=True):
            add(os.path.dirname(p))
    for s in site_dirs():
        for p in glob.glob(os.path.join(s, "nvidia", "**", lib), recursive=True):
            add(os.path.dirname(p))
    for d in os.environ.get("LD_LIBRARY_PATH", "").split(":"):
        if d:
            add(d)
    for d in ("/usr/local/cuda/lib64", "/usr/local/cuda/targets/x86_64-linux/lib",
              "/usr/lib/x86_64-linux-gnu"):
        add(d)
    return found


def driver_info():
    """(device count, reason, names, driver CUDA version as (major, minor) or None)."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError as e:
        return 0, f"no CUDA driver: libcuda.so.1 cannot be loaded ({e})", [], None
    v = ctypes.c_int(0)
    version = None
    if cuda.cuDriverGetVersion(ctypes.byref(v)) == 0 and v.value > 0:
        version = (v.value // 1000, (v.value % 1000) // 10)
    rc = cuda.cuInit(0)
    if rc != 0:
        return 0, f"the CUDA driver does not initialise (cuInit error {rc})", [], version
    n = ctypes.c_int(0)
    rc = cuda.cuDeviceGetCount(ctypes.byref(n))
    if rc != 0 or n.value == 0:
        return 0, f"the CUDA driver reports no device (error {rc}, count {n.value})", [], version
    names = []
    for i in range(n.value):
        dev = ctypes.c_int(0)
        buf = ctypes.create_string_buffer(256)
        if cuda.cuDeviceGet(ctypes.byref(dev), i) == 0 and \
                cuda.cuDeviceGetName(buf, 256, dev) == 0:
            names.append(buf.value.decode(errors="replace"))
    return n.value, "", names, version


def nvrtc_version(path):
    try:
        lib = ctypes.CDLL(path)
    except OSError:
        return None
    major, minor = ctypes.c_int(0), ctypes.c_int(0)
    if lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor)) != 0:
        return None
    return (major.value, minor.value)


def loads(path):
    try:
        ctypes.CDLL(path)
        return True
    except OSError:
        return False


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prefer-nvrtc", action="append", default=[],
                    help="folder searched first for libnvrtc.so.13 (a carried copy)")
    args = ap.parse_args()

    count, reason, names, drv = driver_info()
    out = {"TTC_GPU_COUNT": str(count), "TTC_GPU_REASON": reason,
           "TTC_GPU_NAMES": "; ".join(names),
           "TTC_DRIVER_CUDA": f"{drv[0]}.{drv[1]}" if drv else "",
           "TTC_NVRTC_DIR": "", "TTC_NVRTC_VERSION": "", "TTC_NVRTC_WARNING": "",
           "TTC_CUBLAS_DIR": ""}
    log = [f"driver: {'CUDA ' + out['TTC_DRIVER_CUDA'] if drv else 'none'}; "
           f"GPUs: {count} {names if names else ''} {reason}"]

    nvrtcs = []
    for d in candidate_dirs("libnvrtc.so.13", args.prefer_nvrtc):
        v = nvrtc_version(os.path.join(d, "libnvrtc.so.13"))
        log.append(f"NVRTC candidate {d}: version {v[0]}.{v[1]}" if v else
                   f"NVRTC candidate {d}: does not load")
        if v:
            nvrtcs.append((d, v))
    chosen = next(((d, v) for d, v in nvrtcs if drv is None or v <= drv), None)
    if chosen is None and nvrtcs:
        chosen = nvrtcs[0]
        out["TTC_NVRTC_WARNING"] = (
            f"NVRTC {chosen[1][0]}.{chosen[1][1]} is newer than the driver's CUDA "
            f"{out['TTC_DRIVER_CUDA']}: its PTX will not load; carry nvidia-cuda-nvrtc 13.0 "
            f"(cargo xtask gpu-check without --no-nvrtc)")
    if chosen:
        out["TTC_NVRTC_DIR"] = chosen[0]
        out["TTC_NVRTC_VERSION"] = f"{chosen[1][0]}.{chosen[1][1]}"

    for d in candidate_dirs("libcublas.so.13", []):
        if os.path.isfile(os.path.join(d, "libcublasLt.so.13")) and \
                loads(os.path.join(d, "libcublas.so.13")):
            out["TTC_CUBLAS_DIR"] = d
            break
    log.append(f"chosen NVRTC: {out['TTC_NVRTC_DIR'] or 'none'} "
               f"({out['TTC_NVRTC_VERSION'] or '-'}); cuBLAS: {out['TTC_CUBLAS_DIR'] or 'none'}")
    if out["TTC_NVRTC_WARNING"]:
        log.append("WARNING: " + out["TTC_NVRTC_WARNING"])
    for line in log:
        print(f"cuda_libs: {line}", file=sys.stderr)
    for k, v in out.items():
        print(f"{k}={shlex.quote(v)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
