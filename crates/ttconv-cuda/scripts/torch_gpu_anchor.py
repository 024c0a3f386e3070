#!/usr/bin/env python3
"""GPU anchor of ttconv-cuda's `gpu_bench`: TensorLy-Torch's TT convolution and PyTorch's dense
convolution (cuDNN) timed on one CUDA GPU, on the suite and batches that `gpu_bench` uses.

    python3 torch_gpu_anchor.py --out anchor.json --suite suite.json [--batch 32] [--batch3d 8]
        [--only NAME ...]

Per case (float32 tensors on cuda:0):
  tl_fact_fwd        tltorch.FactorizedConv(factorization='tt', implementation='factorized')
  tl_rec_fwd         the same cores with implementation='reconstructed' (kernel rebuilt per call)
  dense_fwd          F.convNd with the full kernel reconstructed once (cuDNN, default algorithm
                     choice: torch.backends.cudnn.benchmark = False); the reference of the target
  dense_fwd_autotune the same with cudnn.benchmark = True (cuDNN's fastest algorithm)
  *_tf32             the same with TF32 allowed (an extra column: ttconv's default is FP32)
  tl_fact_fwd_bwd    factorized forward + backward of out.sum() (grads of cores and input)
  dense_fwd_bwd      dense forward + backward of out.sum() (grads of kernel and input)
Every measurement except the *_tf32 ones runs with TF32 off
(torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False), so it is FP32
like ttconv's default. Forwards run under torch.no_grad(). Timing: warm-up runs, then the median of
N runs, each timed by the wall clock between two torch.cuda.synchronize() calls (the method of
gpu_bench), N chosen from a probe run to fill --budget seconds within [--min-repeats, --max-repeats].

Exit status: 0; 2 when torch, tltorch or a CUDA GPU is missing (the JSON says why); 1 when a
measurement failed (recorded in the JSON, the others still run).

--cpu runs the same code on the CPU (no synchronization, TF32 flags without effect): a self-test
of this script on machines without a GPU, not a measurement to compare.
"""
import argparse
import json
import os
import platform
import statistics
import sys
import time

def load_suite(path):
    """The cases of `suite.json` (written by `cargo xtask gpu-check` from the bench's default
    suite, in the form of xtask/anchors/anchor_bench.py: id, in_channels, out_channels, spatial,
    kernel / stride / padding (symmetric) / dilation per mode, rank). Their batch is the CPU
    bench's; the GPU batch comes from the command line."""
    with open(path) as f:
        cases = json.load(f)["cases"]
    keys = ("id", "in_channels", "out_channels", "spatial", "kernel", "stride", "padding",
            "dilation", "rank")
    for c in cases:
        missing = [k for k in keys if k not in c]
        if missing:
            raise ValueError(f"{path}: case {c.get('id')!r} lacks {missing}")
    return cases


class Timer:
    """Warm-up, then the median of synchronized wall-clock runs."""

    def __init__(self, torch, args, sync):
        self.sync = sync
        self.warmup = args.warmup
        self.min_repeats = args.min_repeats
        self.max_repeats = max(args.max_repeats, args.min_repeats)
        self.budget_s = args.budget

    def _once(self, fn):
        sync = self.sync
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        return (time.perf_counter() - t0) * 1e3

    def __call__(self, fn):
        for _ in range(self.warmup):
            self._once(fn)
        probe = self._once(fn)
        n = int(self.budget_s * 1e3 / max(probe, 1e-3))
        n = min(self.max_repeats, max(self.min_repeats, n))
        runs = sorted(self._once(fn) for _ in range(n))
        return {"median_ms": statistics.median(runs), "min_ms": runs[0], "max_ms": runs[-1],
                "repeats": n, "warmup": self.warmup}


def out_len(n, k, stride, pad, dil):
    return (n + 2 * pad - dil * (k - 1) - 1) // stride + 1


def set_precision(torch, tf32, autotune=False):
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cudnn.benchmark = autotune


def rel_diff(a, b):
    """max |a - b| / max |b| as a float (None when b is all zeros)."""
    scale = float(b.abs().max())
    if scale == 0.0:
        return None
    return float((a - b).abs().max()) / scale


def run_case(spec, batch, args, torch, tl, tltorch, timer, dev):
    name, cin, cout, spatial = spec["id"], spec["in_channels"], spec["out_channels"], spec["spatial"]
    k, stride, pad, dil = (tuple(spec[key]) for key in ("kernel", "stride", "padding", "dilation"))
    rank = spec["rank"]
    F = torch.nn.functional
    order = len(spatial)
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[order]
    res = {"name": name, "batch": batch, "cin": cin, "cout": cout, "spatial": list(spatial),
           "kernel": list(k), "stride": list(stride), "padding": list(pad), "dilation": list(dil),
           "rank": str(rank),
           "output_spatial": [out_len(*a) for a in zip(spatial, k, stride, pad, dil)],
           "timings": {}, "errors": {}}
    t_case = time.perf_counter()
    torch.manual_seed(args.seed)
    set_precision(torch, tf32=False)

    common = dict(order=order, stride=stride, padding=pad, dilation=dil, bias=False,
                  factorization="tt", rank=rank)
    fact = tltorch.FactorizedConv(cin, cout, k, implementation="factorized", **common)
    fact.reset_parameters(std=0.02)
    rec = tltorch.FactorizedConv(cin, cout, k, implementation="reconstructed", **common)
    rec.weight = fact.weight  # one set of cores for both implementations
    fact = fact.to(dev)
    rec = rec.to(dev)
    res["tt_ranks"] = [int(r) for r in fact.weight.rank]
    res["core_shapes"] = [list(f.shape) for f in fact.weight.factors]
    with torch.no_grad():
        # The TT runs over (in, k.., out): move `out` to the front for (out, in, k..).
        w_dense = tl.moveaxis(fact.weight.to_tensor(), -1, 0).contiguous()
    res["dense_kernel_shape"] = list(w_dense.shape)
    x = torch.randn(batch, cin, *spatial, device=dev, dtype=torch.float32)

    def dense():
        return conv(x, w_dense, None, stride, pad, dil)

    with torch.no_grad():
        y_dense = dense()
        res["fact_vs_dense_rel_diff"] = rel_diff(fact(x), y_dense)
        res["rec_vs_dense_rel_diff"] = rel_diff(rec(x), y_dense)
        res["output_shape"] = list(y_dense.shape)
    del y_dense

    def measure(key, fn, tf32=False, autotune=False, grad=False):
        set_precision(torch, tf32=tf32, autotune=autotune)
        try:
            if grad:
                res["timings"][key] = timer(fn)
            else:
                with torch.no_grad():
                    res["timings"][key] = timer(fn)
        except Exception as e:  # record, keep going
            res["errors"][key] = f"{type(e).__name__}: {e}"
        finally:
            set_precision(torch, tf32=False)

    measure("tl_fact_fwd", lambda: fact(x))
    measure("tl_rec_fwd", lambda: rec(x))
    measure("dense_fwd", dense)
    measure("dense_fwd_autotune", dense, autotune=True)
    measure("dense_fwd_tf32", dense, tf32=True)
    measure("tl_fact_fwd_tf32", lambda: fact(x), tf32=True)

    xg = x.clone().requires_grad_(True)
    cores = list(fact.parameters())
    wg = w_dense.clone().requires_grad_(True)

    def fact_fwd_bwd():
        for p in cores:
            p.grad = None
        xg.grad = None
        fact(xg).sum().backward()

    def dense_fwd_bwd():
        wg.grad = None
        xg.grad = None
        conv(xg, wg, None, stride, pad, dil).sum().backward()

    measure("tl_fact_fwd_bwd", fact_fwd_bwd, grad=True)
    measure("dense_fwd_bwd", dense_fwd_bwd, grad=True)
    res["wall_s"] = time.perf_counter() - t_case
    return res


def fmt(t, key):
    v = t.get(key)
    return f"{v['median_ms']:.3f}" if v else "-"


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="JSON file to write")
    ap.add_argument("--suite", required=True, help="suite.json of the GPU check folder")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--batch3d", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--min-repeats", type=int, default=15)
    ap.add_argument("--max-repeats", type=int, default=100)
    ap.add_argument("--budget", type=float, default=0.5, help="seconds of timed runs per measurement")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", nargs="*", help="case names (default: every case of the suite)")
    ap.add_argument("--cpu", action="store_true", help="self-test on the CPU (not a measurement)")
    args = ap.parse_args()

    t0 = time.perf_counter()
    report = {"tool": "ttconv-cuda torch_gpu_anchor.py", "schema": 1,
              "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
              "machine": {"platform": platform.platform(), "python": platform.python_version()},
              "params": {"batch": args.batch, "batch3d": args.batch3d, "warmup": args.warmup,
                         "min_repeats": args.min_repeats, "max_repeats": args.max_repeats,
                         "budget_s": args.budget, "seed": args.seed, "dtype": "float32",
                         "timer": "wall clock between torch.cuda.synchronize() calls, median"},
              "cases": []}

    def save(complete):
        report["complete"] = complete
        report["total_wall_s"] = time.perf_counter() - t0
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out + ".partial", "w") as f:
            json.dump(report, f, indent=1)
        os.replace(args.out + ".partial", args.out)

    def finish(status, error=None):
        report["error"] = error
        save(True)
        if error:
            print(f"torch_gpu_anchor: {error}", file=sys.stderr)
        print(f"wrote {args.out} ({report['total_wall_s']:.0f} s)")
        return status

    try:
        import torch
    except Exception as e:
        return finish(2, f"PyTorch is not importable: {e!r}")
    report["versions"] = {"torch": torch.__version__, "cuda": torch.version.cuda,
                          "cudnn": torch.backends.cudnn.version()}
    if not torch.cuda.is_available() and not args.cpu:
        return finish(2, "no CUDA GPU visible to PyTorch (torch.cuda.is_available() is False)")
    try:
        import tensorly as tl
        import tltorch
    except Exception as e:
        return finish(2, f"tensorly / tltorch are not importable (install the carried wheels): {e!r}")
    report["versions"].update({"tensorly": tl.__version__,
                               "tltorch": getattr(tltorch, "__version__", None)})
    if args.cpu:
        dev, sync = torch.device("cpu"), (lambda: None)
        report["device"] = {"name": "CPU (--cpu self-test)", "backend": "cpu"}
    else:
        dev, sync = torch.device("cuda", 0), torch.cuda.synchronize
        p = torch.cuda.get_device_properties(0)
        report["device"] = {"name": p.name, "capability": f"{p.major}.{p.minor}",
                            "multiprocessors": p.multi_processor_count,
                            "memory_gib": round(p.total_memory / 2**30, 1), "backend": "cuda"}
    print(f"torch_gpu_anchor on {report['device']['name']}: torch {torch.__version__} (CUDA {torch.version.cuda}, "
          f"cuDNN {torch.backends.cudnn.version()}), tensorly {tl.__version__}, "
          f"tltorch {report['versions']['tltorch']}; batch {args.batch} (3-D: {args.batch3d})",
          flush=True)

    try:
        suite = load_suite(args.suite)
    except Exception as e:
        return finish(2, f"cannot read the suite {args.suite}: {e!r}")
    timer = Timer(torch, args, sync)
    failed = 0
    for spec in suite:
        if args.only and spec["id"] not in args.only:
            continue
        batch = args.batch3d if len(spec["spatial"]) == 3 else args.batch
        try:
            r = run_case(spec, batch, args, torch, tl, tltorch, timer, dev)
        except Exception as e:  # the case could not even be set up
            r = {"name": spec["id"], "batch": batch, "timings": {},
                 "errors": {"setup": f"{type(e).__name__}: {e}"}}
        failed += bool(r["errors"])
        report["cases"].append(r)
        save(False)  # a run cut short still leaves the cases done
        t = r["timings"]
        print(f"[anchor] {r['name']:28s} tl fact {fmt(t, 'tl_fact_fwd')} ms, tl rec "
              f"{fmt(t, 'tl_rec_fwd')} ms, dense {fmt(t, 'dense_fwd')} ms (autotune "
              f"{fmt(t, 'dense_fwd_autotune')}, tf32 {fmt(t, 'dense_fwd_tf32')}), tl fact f+b "
              f"{fmt(t, 'tl_fact_fwd_bwd')} ms, dense f+b {fmt(t, 'dense_fwd_bwd')} ms"
              + (f"  ERRORS: {r['errors']}" if r["errors"] else ""), flush=True)
        if not args.cpu:
            torch.cuda.empty_cache()
    set_precision(torch, tf32=False)
    return finish(1 if failed else 0, f"{failed} case(s) with errors" if failed else None)


if __name__ == "__main__":
    sys.exit(main())
