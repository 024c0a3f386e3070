#!/usr/bin/env python3
"""Finds what ttconv-cuda loads at run time on this machine: the CUDA driver and its GPUs, a
`libnvrtc.so.13` the driver can use, and cuBLAS (`libcublas.so.13` with `libcublasLt.so.13`,
else CUDA 12's `libcublas.so.12` with `libcublasLt.so.12` from the same folder), and makes a
folder of symbolic links to exactly those files.

    eval "$(python3 cuda_libs.py --prefer-nvrtc DIR --link-dir LINKS)"
    export LD_LIBRARY_PATH="$TTC_LIB_DIR:$LD_LIBRARY_PATH"

Why the link folder: cudarc `dlopen`s the unversioned names first (`libnvrtc.so`,
`libcublas.so`), so a folder holding only `libnvrtc.so.13` on LD_LIBRARY_PATH loses to any
unversioned copy in the loader cache (a CUDA toolkit on the image): a toolkit NVRTC newer than
the driver, or a toolkit libcublas paired with another libcublasLt. The link folder holds the
unversioned and the versioned names of the chosen files (and NVRTC's builtins library), so with
it first on LD_LIBRARY_PATH the loader finds exactly those.

Prints shell assignments on stdout (values quoted) and a human summary on stderr:

    TTC_GPU_COUNT       number of CUDA devices (0 when there is no driver or no device)
    TTC_GPU_REASON      why there is no usable GPU ('' when there is one)
    TTC_GPU_NAMES       the devices' names, '; '-separated
    TTC_DRIVER_CUDA     the CUDA version the driver supports, e.g. 13.0 ('' without a driver)
    TTC_NVRTC_DIR       folder holding the chosen libnvrtc.so.13 ('' when none was found)
    TTC_NVRTC_VERSION   its version, e.g. 13.0
    TTC_NVRTC_WARNING   set when the chosen NVRTC is newer than the driver (its PTX will not load;
                        CUBINs still do)
    TTC_CUBLAS_DIR      folder holding the chosen libcublas and its libcublasLt ('' when none)
    TTC_CUBLAS_MAJOR    13 or 12 ('' when none)
    TTC_LIB_DIR         the link folder (--link-dir), '' when not asked for

Where NVRTC is looked for, in order: --prefer-nvrtc folders (a carried copy), the nvidia wheels
of every site-packages folder of this python (PyTorch's bundled CUDA libraries), the folders of
LD_LIBRARY_PATH, /usr/local/cuda. The first NVRTC whose version is not newer than the driver's
CUDA version wins. cuBLAS: the same places (without --prefer-nvrtc), CUDA 13 first, then 12.

`--self-test` checks the link folder logic on fake library files and exits (0 when it holds).
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


NVRTC_LIB = "libnvrtc.so.13"
CUBLAS_MAJORS = (13, 12)


def find_cublas(loadable=loads, dirs_for=lambda lib: candidate_dirs(lib, [])):
    """(folder, major) of the first libcublas.so.MAJOR with its libcublasLt.so.MAJOR beside it
    that loads, CUDA 13 first, then 12; (None, None) when there is none. `dirs_for(lib)` lists
    the folders holding `lib`, most preferred first."""
    for major in CUBLAS_MAJORS:
        for d in dirs_for(f"libcublas.so.{major}"):
            if os.path.isfile(os.path.join(d, f"libcublasLt.so.{major}")) and \
                    loadable(os.path.join(d, f"libcublas.so.{major}")):
                return d, major
    return None, None


def link_names(nvrtc_dir, cublas_dir, cublas_major):
    """{link name: target path} of the link folder for the chosen libraries."""
    links = {}
    if nvrtc_dir:
        target = os.path.join(nvrtc_dir, NVRTC_LIB)
        links["libnvrtc.so"] = target
        links[NVRTC_LIB] = target
        for p in sorted(glob.glob(os.path.join(nvrtc_dir, "libnvrtc-builtins.so*"))):
            links[os.path.basename(p)] = p
    if cublas_dir:
        for stem in ("libcublas", "libcublasLt"):
            target = os.path.join(cublas_dir, f"{stem}.so.{cublas_major}")
            links[f"{stem}.so"] = target
            links[f"{stem}.so.{cublas_major}"] = target
    return links


def make_link_dir(dest, links):
    """Empties `dest` of symbolic links (it must hold nothing else) and fills it with `links`."""
    os.makedirs(dest, exist_ok=True)
    for name in os.listdir(dest):
        path = os.path.join(dest, name)
        if not os.path.islink(path):
            raise SystemExit(f"cuda_libs: {path} is not a symbolic link: refusing to touch "
                             f"{dest}; choose an empty --link-dir")
        os.unlink(path)
    for name, target in sorted(links.items()):
        os.symlink(target, os.path.join(dest, name))


def self_test():
    """The link folder logic on fake files: the unversioned names point at the chosen files."""
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        nv = os.path.join(tmp, "nvrtc")
        cb = os.path.join(tmp, "cublas12")
        for d, files in ((nv, [NVRTC_LIB, "libnvrtc-builtins.so.13.0"]),
                         (cb, ["libcublas.so.12", "libcublasLt.so.12"])):
            os.makedirs(d)
            for f in files:
                open(os.path.join(d, f), "w").close()
        # Only the CUDA 12 pair is there: find_cublas falls back to it.
        def fake_dirs(lib):
            return [cb] if os.path.isfile(os.path.join(cb, lib)) else []
        d, major = find_cublas(loadable=os.path.isfile, dirs_for=fake_dirs)
        assert (d, major) == (cb, 12), (d, major)
        links = link_names(nv, d, major)
        dest = os.path.join(tmp, "links")
        make_link_dir(dest, links)
        make_link_dir(dest, links)  # idempotent: old links are replaced
        want = {
            "libnvrtc.so": os.path.join(nv, NVRTC_LIB),
            NVRTC_LIB: os.path.join(nv, NVRTC_LIB),
            "libnvrtc-builtins.so.13.0": os.path.join(nv, "libnvrtc-builtins.so.13.0"),
            "libcublas.so": os.path.join(d, "libcublas.so.12"),
            "libcublas.so.12": os.path.join(d, "libcublas.so.12"),
            "libcublasLt.so": os.path.join(d, "libcublasLt.so.12"),
            "libcublasLt.so.12": os.path.join(d, "libcublasLt.so.12"),
        }
        got = {n: os.readlink(os.path.join(dest, n)) for n in os.listdir(dest)}
        assert got == want, got
        # A cuBLAS without its cuBLASLt is not chosen.
        os.remove(os.path.join(cb, "libcublasLt.so.12"))
        assert find_cublas(loadable=os.path.isfile, dirs_for=fake_dirs) == (None, None)
        # A folder holding a real file is refused, not emptied.
        open(os.path.join(dest, "keep.txt"), "w").close()
        try:
            make_link_dir(dest, links)
            raise AssertionError("a folder with a regular file was emptied")
        except SystemExit:
            pass
        assert os.path.exists(os.path.join(dest, "keep.txt"))
    print("cuda_libs: self-test passed")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prefer-nvrtc", action="append", default=[],
                    help="folder searched first for libnvrtc.so.13 (a carried copy)")
    ap.add_argument("--link-dir", help="folder (re)filled with links to the chosen libraries")
    ap.add_argument("--self-test", action="store_true", help="check the link logic and exit")
    args = ap.parse_args()
    if args.self_test:
        return self_test()

    count, reason, names, drv = driver_info()
    out = {"TTC_GPU_COUNT": str(count), "TTC_GPU_REASON": reason,
           "TTC_GPU_NAMES": "; ".join(names),
           "TTC_DRIVER_CUDA": f"{drv[0]}.{drv[1]}" if drv else "",
           "TTC_NVRTC_DIR": "", "TTC_NVRTC_VERSION": "", "TTC_NVRTC_WARNING": "",
           "TTC_CUBLAS_DIR": "", "TTC_CUBLAS_MAJOR": "", "TTC_LIB_DIR": ""}
    log = [f"driver: {'CUDA ' + out['TTC_DRIVER_CUDA'] if drv else 'none'}; "
           f"GPUs: {count} {names if names else ''} {reason}"]

    nvrtcs = []
    for d in candidate_dirs(NVRTC_LIB, args.prefer_nvrtc):
        v = nvrtc_version(os.path.join(d, NVRTC_LIB))
        log.append(f"NVRTC candidate {d}: version {v[0]}.{v[1]}" if v else
                   f"NVRTC candidate {d}: does not load")
        if v:
            nvrtcs.append((d, v))
    chosen = next(((d, v) for d, v in nvrtcs if drv is None or v <= drv), None)
    if chosen is None and nvrtcs:
        chosen = nvrtcs[0]
        out["TTC_NVRTC_WARNING"] = (
            f"NVRTC {chosen[1][0]}.{chosen[1][1]} is newer than the driver's CUDA "
            f"{out['TTC_DRIVER_CUDA']}: PTX from it will not load (CUBINs do); carry "
            f"nvidia-cuda-nvrtc 13.0 (cargo xtask gpu-check without --no-nvrtc)")
    if chosen:
        out["TTC_NVRTC_DIR"] = chosen[0]
        out["TTC_NVRTC_VERSION"] = f"{chosen[1][0]}.{chosen[1][1]}"

    cublas_dir, cublas_major = find_cublas()
    if cublas_dir:
        out["TTC_CUBLAS_DIR"] = cublas_dir
        out["TTC_CUBLAS_MAJOR"] = str(cublas_major)
    log.append(f"chosen NVRTC: {out['TTC_NVRTC_DIR'] or 'none'} "
               f"({out['TTC_NVRTC_VERSION'] or '-'}); cuBLAS: "
               f"{(cublas_dir + ' (CUDA ' + str(cublas_major) + ')') if cublas_dir else 'none'}")
    if args.link_dir:
        links = link_names(out["TTC_NVRTC_DIR"], cublas_dir, cublas_major)
        make_link_dir(args.link_dir, links)
        out["TTC_LIB_DIR"] = os.path.realpath(args.link_dir)
        for name, target in sorted(links.items()):
            log.append(f"link {out['TTC_LIB_DIR']}/{name} -> {target}")
    if out["TTC_NVRTC_WARNING"]:
        log.append("WARNING: " + out["TTC_NVRTC_WARNING"])
    for line in log:
        print(f"cuda_libs: {line}", file=sys.stderr)
    for k, v in out.items():
        print(f"{k}={shlex.quote(v)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
