#!/usr/bin/env python3
"""Final table of the GPU check: ttconv-cuda's `gpu_bench` JSON against the PyTorch anchor JSON
(`torch_gpu_anchor.py`), per case and as geometric means against these targets:

  * factorized forward at least 2x faster than TensorLy-Torch's factorized forward (geomean of
    tltorch ms / ours ms),
  * reconstructed forward at least 0.8x the speed of PyTorch's dense conv (cuDNN, FP32, default
    algorithm choice; geomean of cudnn ms / ours ms),
  * max relative difference from the CPU backend under 1e-4 (max |cuda - cpu| / max |cpu| of the
    forward outputs, both implementations, all cases),
  * the backward (input and core gradients, both implementations) within its own tolerance per
    case: gpu_bench's `bwd_tol`, the forward's 1e-4 scaled by sqrt(summed length / 1024) for
    gradients that sum over batch x positions (see `tol_for_len` in gpu_bench.rs).

    python3 report.py --ours gpu_bench.json --anchor torch_anchor.json [--md report.md]

Prints a markdown table (ready for docs/perf.md) and the verdicts. Either file may be missing or
partial: what is there is printed, the rest is `n/a`. Exit status 0 when every target is met,
1 otherwise (a missed target or missing data).
"""
import argparse
import json
import math
import sys

TARGET_FACT = 2.0
TARGET_REC = 0.8
TARGET_DIFF = 1e-4


def load(path, what):
    if not path:
        return None, f"no {what} JSON given"
    try:
        with open(path) as f:
            return json.load(f), None
    except FileNotFoundError:
        return None, f"{what} JSON {path} not found (that step failed or did not run)"
    except (OSError, ValueError) as e:
        return None, f"{what} JSON {path} unreadable: {e}"


def median(case, key):
    t = (case or {}).get("timings", {}).get(key)
    return t.get("median_ms") if t else None


def ms(v):
    return "n/a" if v is None else f"{v:.3f}"


def ratio(num, den):
    if num is None or den is None or den <= 0:
        return None
    return num / den


def x(v):
    return "n/a" if v is None else f"{v:.2f}x"


def sci(v):
    return "n/a" if v is None else f"{v:.1e}"


def geomean(values):
    vals = [v for v in values if v is not None and v > 0]
    if not vals:
        return None, 0
    return math.exp(sum(math.log(v) for v in vals) / len(vals)), len(vals)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ours", required=True, help="gpu_bench --json output")
    ap.add_argument("--anchor", required=True, help="torch_gpu_anchor.py --out output")
    ap.add_argument("--md", help="also write the table and verdicts to this markdown file")
    args = ap.parse_args()

    ours, ours_err = load(args.ours, "gpu_bench")
    anchor, anchor_err = load(args.anchor, "anchor")
    notes = [e for e in (ours_err, anchor_err) if e]
    if anchor and anchor.get("error"):
        notes.append(f"anchor: {anchor['error']}")
    for who, data in (("gpu_bench", ours), ("anchor", anchor)):
        if data and data.get("complete") is False:
            notes.append(f"{who} JSON is partial: the run was cut short after "
                         f"{len(data.get('cases', []))} case(s)")
    if anchor and anchor.get("device", {}).get("backend") == "cpu":
        notes.append("the anchor ran on the CPU (--cpu self-test): not a GPU result")

    ours_cases = {c["name"]: c for c in (ours or {}).get("cases", [])}
    anchor_cases = {c["name"]: c for c in (anchor or {}).get("cases", [])}
    names = list(ours_cases) + [n for n in anchor_cases if n not in ours_cases]

    ours_dev = (ours or {}).get("device", {}).get("name")
    anchor_dev = (anchor or {}).get("device", {}).get("name")
    if ours_dev and anchor_dev and ours_dev != anchor_dev:
        notes.append(f"different devices: ours on {ours_dev}, anchor on {anchor_dev}")
    if ours and ours.get("device", {}).get("backend") == "cpu":
        notes.append("ours ran on the CPU backend (gpu_bench --cpu self-test): not a GPU result")

    lines = []
    out = lines.append
    versions = (anchor or {}).get("versions", {})
    out(f"GPU check: ttconv-cuda on {ours_dev or 'n/a'}; anchor on {anchor_dev or 'n/a'} "
        f"(torch {versions.get('torch', 'n/a')}, CUDA {versions.get('cuda', 'n/a')}, cuDNN "
        f"{versions.get('cudnn', 'n/a')}, tltorch {versions.get('tltorch', 'n/a')}, tensorly "
        f"{versions.get('tensorly', 'n/a')}). float32, FP32 math unless a column says TF32; "
        f"median ms of synchronized runs.")
    out("")
    out("| case | batch | ours fact | tltorch fact | speedup | ours rec | cuDNN dense | rec vs cuDNN "
        "| cuDNN autotuned | ours rec TF32 | cuDNN TF32 | ours fact f+b | tltorch fact f+b "
        "| cuDNN f+b | max rel diff vs CPU | bwd rel diff (tol) |")
    out("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    fact_ratios, rec_ratios, rec_auto_ratios, diffs = [], [], [], []
    bwd_fail, bwd_checked = [], 0
    for n in names:
        o, a = ours_cases.get(n), anchor_cases.get(n)
        ob, ab = (o or {}).get("batch"), (a or {}).get("batch")
        batch = str(ob if ob is not None else ab)
        if ob is not None and ab is not None and ob != ab:
            batch = f"{ob} vs {ab}!"
            notes.append(f"{n}: batch differs (ours {ob}, anchor {ab}); ratios left out")
        same_batch = not (ob is not None and ab is not None and ob != ab)
        of, tf = median(o, "fact_fwd"), median(a, "tl_fact_fwd")
        orc, dn = median(o, "rec_fwd"), median(a, "dense_fwd")
        da = median(a, "dense_fwd_autotune")
        fr = ratio(tf, of) if same_batch else None
        rr = ratio(dn, orc) if same_batch else None
        ra = ratio(da, orc) if same_batch else None
        fact_ratios.append(fr)
        rec_ratios.append(rr)
        rec_auto_ratios.append(ra)
        chk = (o or {}).get("check") or {}
        d = chk.get("max_fwd_rel_diff")
        if o is not None:
            diffs.append(d if d is not None else math.inf)
        bd, bt = chk.get("max_bwd_rel_diff"), chk.get("bwd_tol")
        if o is not None:
            bwd_checked += 1
            if bd is None or bt is None or not bd < bt:
                bwd_fail.append(n)
        out(f"| {n} | {batch} | {ms(of)} | {ms(tf)} | {x(fr)} | {ms(orc)} | {ms(dn)} | {x(rr)} "
            f"| {ms(da)} | {ms(median(o, 'rec_fwd_tf32'))} | {ms(median(a, 'dense_fwd_tf32'))} "
            f"| {ms(median(o, 'fact_fwd_bwd'))} | {ms(median(a, 'tl_fact_fwd_bwd'))} "
            f"| {ms(median(a, 'dense_fwd_bwd'))} | {sci(d)} | {sci(bd)} ({sci(bt)}) |")
        for who, c in (("ours", o), ("anchor", a)):
            err = (c or {}).get("error") or (c or {}).get("errors")
            if err:
                notes.append(f"{n}: {who} error: {err}")

    out("")
    g_fact, n_fact = geomean(fact_ratios)
    g_rec, n_rec = geomean(rec_ratios)
    g_auto, _ = geomean(rec_auto_ratios)
    worst = max(diffs) if diffs else None
    complete = bool(names) and n_fact == len(names) and n_rec == len(names)
    met_fact = g_fact is not None and g_fact >= TARGET_FACT
    met_rec = g_rec is not None and g_rec >= TARGET_REC
    met_diff = worst is not None and worst < TARGET_DIFF
    ok_fact = met_fact and n_fact == len(names)
    ok_rec = met_rec and n_rec == len(names)
    ok_diff = met_diff and len(diffs) == len(names)

    def verdict(value, met, n):
        if value is None:
            return "NO DATA"
        if not met:
            return "FAIL"
        return "PASS" if n == len(names) else f"INCOMPLETE ({n} of {len(names)} cases)"

    out(f"- factorized forward vs TensorLy-Torch (geomean of tltorch ms / ours ms over {n_fact} "
        f"of {len(names)} cases): {x(g_fact)} (target >= {TARGET_FACT:.1f}x): "
        f"{verdict(g_fact, met_fact, n_fact)}")
    out(f"- reconstructed forward vs cuDNN dense, FP32 default (geomean of cuDNN ms / ours ms over "
        f"{n_rec} of {len(names)} cases): {x(g_rec)} (target >= {TARGET_REC:.1f}x): "
        f"{verdict(g_rec, met_rec, n_rec)}; vs cuDNN autotuned: {x(g_auto)} (information)")
    out(f"- max relative difference from the CPU backend (forward, both implementations, "
        f"{len(diffs)} cases): {sci(worst)} (target < {TARGET_DIFF:.0e}): "
        f"{verdict(worst, met_diff, len(diffs))}")
    ok_bwd = bool(names) and not bwd_fail and bwd_checked == len(names)
    out(f"- backward vs the CPU backend (input and core gradients, both implementations, "
        f"{bwd_checked} cases, each against its summed-length tolerance): "
        f"{'PASS' if ok_bwd else 'FAIL' if bwd_fail else 'INCOMPLETE' if bwd_checked else 'NO DATA'}"
        + (f" (outside: {', '.join(bwd_fail)})" if bwd_fail else ""))
    if not complete:
        out("- some cases lack a measurement: see the notes")
    for note in notes:
        out(f"- note: {note}")
    on_gpu = not any(d and d.get("device", {}).get("backend") == "cpu" for d in (ours, anchor))
    all_ok = ok_fact and ok_rec and ok_diff and ok_bwd and on_gpu
    out(f"- overall: {'ALL TARGETS MET' if all_ok else 'NOT ALL TARGETS MET'}")

    text = "\n".join(lines) + "\n"
    if args.md:
        with open(args.md, "w") as f:
            f.write(text)
    sys.stdout.write(text)
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
