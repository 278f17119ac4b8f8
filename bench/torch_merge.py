#!/usr/bin/env python3
"""PyTorch reference timings for Smelter's benchmark suite (bench/README.md).

The merges are computed the way mergekit computes them (mergekit/merge_methods/
generalized_task_arithmetic.py and mergekit/sparsify.py): task vectors in the tensors' dtype,
sparsified one model at a time, stacked, weighted, sign-elected by sum, summed and divided by the
agreeing weights. TIES trims with torch.topk over |delta| (mergekit before April 2024; the
current argsort is timed as ties_argsort). Also timed: the exact threshold alone (torch.kthvalue,
torch.topk), feature-space linear CKA (centering and three f32 cuBLAS GEMMs) and a device copy.

    python3 bench/torch_merge.py --json torch.json                 # GPU defaults (N=4 bf16 256Mi, ...)
    python3 bench/torch_merge.py --device cpu --smoke              # tiny sizes on the CPU: a smoke test

Times are medians of --repeats runs after --warmup runs, taken with CUDA events on the GPU.
Sizes accept binary suffixes: 2Mi = 2 * 2^20, 1Gi = 2^30. The JSON is read by
dev.smelter.bench.Report (--torch) to print speedups next to Smelter's JMH results.
"""
import argparse
import datetime
import json
import platform
import statistics
import sys
import time

try:
    import torch
except ImportError:  # pragma: no cover - reported as a clear error instead of a traceback
    torch = None

METHODS = ("linear", "ta", "ties", "ties_argsort", "dare", "dare_l1")


def parse_count(text):
    """'16', '2Mi', '256Mi', '1Gi' (k/M/G are taken as binary too)."""
    s = str(text).strip().lower()
    if s.endswith("i"):
        s = s[:-1]
    unit = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}.get(s[-1:], 1)
    if unit != 1:
        s = s[:-1]
    return int(s) * unit


def count_label(n):
    if n >= 1 << 20 and n % (1 << 20) == 0:
        return f"{n >> 20}Mi"
    if n >= 1 << 10 and n % (1 << 10) == 0:
        return f"{n >> 10}Ki"
    return str(n)


def dtype_of(name):
    return {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}[name.lower()]


def minimal_bytes(method, models, elements, dtype_size):
    """Each input read once, the output written once (linear has no base)."""
    tensors = models + 1 if method == "linear" else models + 2
    return tensors * elements * dtype_size


# ---- timing -----------------------------------------------------------------------------------

def time_ms(fn, device, warmup, repeats):
    """Milliseconds of each of `repeats` calls of fn() after `warmup` calls; results are dropped."""
    cuda = device.type == "cuda"
    for _ in range(warmup):
        fn()
        if cuda:
            torch.cuda.synchronize(device)
    times = []
    for _ in range(repeats):
        if cuda:
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return times


# ---- inputs -------------------------------------------------------------------------------------

def make_models(n, models, dtype, device, seed=1):
    """A base (uniform, |x| < 0.02) and `models` fine-tunes: base plus task vectors 10x smaller."""
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    base32 = (torch.rand(n, generator=g, device=device) - 0.5) * 0.04
    xs = []
    for _ in range(models):
        xs.append((base32 + (torch.rand(n, generator=g, device=device) - 0.5) * 0.004).to(dtype))
    base = base32.to(dtype)
    del base32
    return base, xs


# ---- the merges, as mergekit computes them -------------------------------------------------------

def task_vectors(base, xs):
    return [x.to(base.dtype) - base for x in xs]


def magnitude_trim(delta, density, select):
    """Keeps the k = int(density * n) largest |delta| (by index: exactly k, ties broken by torch)."""
    if density >= 1:
        return delta
    k = int(density * delta.numel())
    mags = delta.abs().view(-1)
    if mags.device.type == "cpu":
        mags = mags.float()  # as mergekit: CPU sorting in f32
    if select == "topk":
        keep = torch.topk(mags, k=k, largest=True).indices
    else:
        keep = torch.argsort(mags, descending=True)[:k]
    mask = torch.zeros_like(delta)
    mask.view(-1)[keep] = 1
    return delta * mask


def random_drop(delta, density, rescale):
    """DARE: Bernoulli(density) keep mask; rescale 'inverse' (kept / density) or 'l1' (norm match)."""
    if density >= 1:
        return delta
    # torch.bernoulli has no f16 CPU kernel: mergekit works in f32 there, else in the tensor's dtype
    work = delta.dtype if (delta.device.type != "cpu" or delta.dtype == torch.bfloat16) else torch.float32
    d = delta.to(work)
    mask = torch.bernoulli(torch.full_like(d, density))
    kept = d * mask
    if rescale == "inverse":
        kept /= density
    elif rescale == "l1":
        before, after = d.abs().sum(), kept.abs().sum()
        if not (before < 1e-7 or after < 1e-7):  # a host sync, as in mergekit
            kept = kept * (before / after)
    return kept.to(delta.dtype)


def combine(base, deltas, weights, consensus, normalize, lam=1.0):
    """Weighted sum of the task vectors; with consensus only those agreeing with the elected sign."""
    stacked = torch.stack(deltas, dim=0)
    del deltas[:]
    w = torch.tensor(weights, dtype=stacked.dtype, device=stacked.device)
    w = w.view(-1, *([1] * (stacked.dim() - 1)))
    weighted = stacked * w
    del stacked
    if consensus:
        signs = weighted.sign().to(base.dtype)
        elected = (weighted.sum(dim=0) >= 0).to(base.dtype) * 2 - 1
        agree = signs == elected
        del signs, elected
        mixed = (weighted * agree).sum(dim=0)
        divisor = (w * agree).sum(dim=0)
        divisor[divisor == 0] = 1
    else:
        mixed = weighted.sum(dim=0)
        divisor = w.sum(dim=0)
        divisor[divisor.abs() < 1e-8] = 1
    del weighted
    if normalize:
        mixed /= divisor
    if lam != 1:
        mixed *= lam
    return (base + mixed).to(base.dtype)


def merge(method, base, xs, weights, density):
    if method == "linear":
        stacked = torch.stack(xs, dim=0)
        w = torch.tensor(weights, dtype=stacked.dtype, device=stacked.device)
        w = w.view(-1, *([1] * (stacked.dim() - 1)))
        out = (w * stacked).sum(dim=0)
        return out / w.sum(dim=0)  # normalize (mergekit's default for linear)
    deltas = task_vectors(base, xs)
    if method == "ta":
        return combine(base, deltas, weights, consensus=False, normalize=False)
    if method in ("ties", "ties_argsort"):
        select = "topk" if method == "ties" else "argsort"
        deltas = [magnitude_trim(d, density, select) for d in deltas]
        return combine(base, deltas, weights, consensus=True, normalize=True)
    if method in ("dare", "dare_l1"):  # dare_ties with mergekit's defaults: no normalize
        rescale = "inverse" if method == "dare" else "l1"
        deltas = [random_drop(d, density, rescale) for d in deltas]
        return combine(base, deltas, weights, consensus=True, normalize=False)
    raise ValueError(f"unknown method {method}")


# ---- the other measurements ----------------------------------------------------------------------

def kth_largest_kthvalue(x, k):
    mags = x.abs().view(-1)
    return torch.kthvalue(mags, mags.numel() - k + 1).values


def kth_largest_topk(x, k):
    return torch.topk(x.abs().view(-1), k, largest=True, sorted=False).values.min()


def feature_cka(x, y):
    """||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F), computed in f32, returned to the host."""
    x = x.float()
    y = y.float()
    x = x - x.mean(dim=0, keepdim=True)
    y = y - y.mean(dim=0, keepdim=True)
    xy = torch.linalg.matrix_norm(x.T @ y) ** 2
    xx = torch.linalg.matrix_norm(x.T @ x)
    yy = torch.linalg.matrix_norm(y.T @ y)
    return (xy / (xx * yy)).item()


# ---- driver ----------------------------------------------------------------------------------

def free(device):
    if device.type == "cuda":
        torch.cuda.empty_cache()


def record(results, entry, times):
    entry["runs_ms"] = [round(t, 4) for t in times]
    entry["ms"] = statistics.median(times)
    results.append(entry)
    return entry


def run_merges(args, device, results):
    for dt_name in args.dtypes:
        dt = dtype_of(dt_name)
        for n in args.elements:
            for models in args.models:
                try:
                    base, xs = make_models(n, models, dt, device)
                except RuntimeError as e:  # out of memory, unsupported dtype
                    results.append({"kind": "merge", "method": "*", "models": models, "dtype": dt_name,
                                    "elements": n, "error": str(e).splitlines()[0]})
                    free(device)
                    continue
                weights = [1.0 / models] * models
                for method in args.methods:
                    entry = {"kind": "merge", "method": method, "models": models, "dtype": dt_name, "elements": n,
                             "density": args.density}
                    try:
                        times = time_ms(lambda: merge(method, base, xs, weights, args.density), device,
                                        args.warmup, args.repeats)
                        e = record(results, entry, times)
                        e["minimal_bytes"] = minimal_bytes(method, models, n, base.element_size())
                        e["gbps"] = e["minimal_bytes"] / (e["ms"] * 1e-3) / 1e9
                        print(f"merge {method:12s} N={models} {dt_name:4s} {count_label(n):>6s}: "
                              f"{e['ms']:10.3f} ms  {e['gbps']:8.1f} GB/s", flush=True)
                    except RuntimeError as e:
                        entry["error"] = str(e).splitlines()[0]
                        results.append(entry)
                        print(f"merge {method} N={models} {dt_name} {count_label(n)}: {entry['error']}", flush=True)
                    free(device)
                del base, xs
                free(device)


def run_thresholds(args, device, results):
    for dt_name in args.threshold_dtypes:
        dt = dtype_of(dt_name)
        for n in args.threshold_elements:
            _, xs = make_models(n, 1, dt, device, seed=2)
            x = xs[0]
            del xs
            k = int(args.density * n)
            values = {}
            for op, fn in (("kthvalue", kth_largest_kthvalue), ("topk", kth_largest_topk)):
                entry = {"kind": "threshold", "op": op, "dtype": dt_name, "elements": n, "density": args.density}
                try:
                    values[op] = float(fn(x, k))
                    times = time_ms(lambda: fn(x, k), device, args.warmup, args.threshold_repeats)
                    e = record(results, entry, times)
                    e["gbps"] = n * x.element_size() / (e["ms"] * 1e-3) / 1e9
                    print(f"threshold {op:8s} {dt_name:4s} {count_label(n):>6s}: {e['ms']:10.3f} ms", flush=True)
                except RuntimeError as err:
                    entry["error"] = str(err).splitlines()[0]
                    results.append(entry)
                    print(f"threshold {op} {dt_name} {count_label(n)}: {entry['error']}", flush=True)
                free(device)
            if len(values) == 2 and values["kthvalue"] != values["topk"]:
                print(f"warning: kthvalue {values['kthvalue']} != topk {values['topk']}", file=sys.stderr)
            del x
            free(device)


def run_cka(args, device, results):
    rows, cols = args.cka_rows, args.cka_cols
    for dt_name in args.cka_dtypes:
        dt = dtype_of(dt_name)
        entry = {"kind": "cka", "dtype": dt_name, "rows": rows, "cols": cols, "compute": "f32 (no TF32)"}
        try:
            g = torch.Generator(device=device)
            g.manual_seed(3)
            x = torch.randn(rows, cols, generator=g, device=device).to(dt)
            y = (x.float() + 0.5 * torch.randn(rows, cols, generator=g, device=device)).to(dt)
            entry["value"] = feature_cka(x, y)
            times = time_ms(lambda: feature_cka(x, y), device, args.warmup, args.repeats)
            e = record(results, entry, times)
            e["gflops"] = 3 * 2 * rows * cols * cols / (e["ms"] * 1e-3) / 1e9
            print(f"cka {dt_name:4s} {count_label(rows)} x {cols}: {e['ms']:10.3f} ms  {e['gflops']:8.0f} GFLOP/s",
                  flush=True)
            del x, y
        except RuntimeError as err:
            entry["error"] = str(err).splitlines()[0]
            results.append(entry)
            print(f"cka {dt_name}: {entry['error']}", flush=True)
        free(device)


def run_copy(args, device, results):
    n = args.copy_bytes
    src = torch.ones(n, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    times = time_ms(lambda: dst.copy_(src), device, args.warmup, max(args.repeats, 10))
    e = record(results, {"kind": "copy", "bytes": n}, times)
    e["gbps"] = 2 * n / (e["ms"] * 1e-3) / 1e9
    print(f"copy {count_label(n)} bytes: {e['ms']:10.3f} ms  {e['gbps']:8.1f} GB/s (read + written)", flush=True)
    del src, dst
    free(device)


def print_table(results):
    print()
    print("| kind | what | N | dtype | size | median ms | GB/s or GFLOP/s |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        what = r.get("method") or r.get("op") or ""
        size = count_label(r.get("elements") or r.get("bytes") or 0)
        if r["kind"] == "cka":
            size = f"{count_label(r['rows'])} x {r['cols']}"
        if "error" in r:
            print(f"| {r['kind']} | {what} | {r.get('models', '')} | {r.get('dtype', '')} | {size} | "
                  f"error: {r['error']} | |")
            continue
        rate = r.get("gbps", r.get("gflops"))
        print(f"| {r['kind']} | {what} | {r.get('models', '')} | {r.get('dtype', '')} | {size} | "
              f"{r['ms']:.3f} | {rate:.1f} |")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    p.add_argument("--smoke", action="store_true", help="tiny sizes and few runs (a quick check, e.g. on the CPU)")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--models", default="4", help="model counts, e.g. 2,4,8")
    p.add_argument("--dtypes", default="bf16")
    p.add_argument("--elements", default="256Mi", help="elements per tensor (256Mi = 268,435,456)")
    p.add_argument("--density", type=float, default=0.5)
    p.add_argument("--threshold-dtypes", default="bf16,f32")
    p.add_argument("--threshold-elements", default="256Mi")
    p.add_argument("--threshold-repeats", type=int, default=3)
    p.add_argument("--cka-rows", default="64Ki")
    p.add_argument("--cka-cols", default="1024")
    p.add_argument("--cka-dtypes", default="f32,bf16")
    p.add_argument("--copy-bytes", default="1Gi")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--skip", default="", help="parts to leave out: merge,threshold,cka,copy")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    if torch is None:
        print("torch_merge.py: PyTorch is not installed (pip install torch)", file=sys.stderr)
        return 2

    if args.smoke:
        args.models, args.elements, args.threshold_elements = "2,4", "64Ki", "64Ki"
        args.cka_rows, args.cka_cols, args.copy_bytes = "512", "32", "4Mi"
        args.warmup, args.repeats, args.threshold_repeats = 1, 2, 2
    args.methods = [m for m in args.methods.split(",") if m]
    for m in args.methods:
        if m not in METHODS:
            p.error(f"unknown method {m} (one of {', '.join(METHODS)})")
    args.models = [int(m) for m in args.models.split(",")]
    args.dtypes = [d for d in args.dtypes.split(",") if d]
    args.elements = [parse_count(e) for e in args.elements.split(",")]
    args.threshold_dtypes = [d for d in args.threshold_dtypes.split(",") if d]
    args.threshold_elements = [parse_count(e) for e in args.threshold_elements.split(",")]
    args.cka_rows, args.cka_cols = parse_count(args.cka_rows), parse_count(args.cka_cols)
    args.cka_dtypes = [d for d in args.cka_dtypes.split(",") if d]
    args.copy_bytes = parse_count(args.copy_bytes)
    skip = set(s for s in args.skip.split(",") if s)

    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            print("torch_merge.py: CUDA is not available to torch; use --device cpu", file=sys.stderr)
            return 2
        torch.cuda.set_device(device)
        device_name = torch.cuda.get_device_name(device)
    else:
        device_name = platform.processor() or platform.machine()
    # Smelter's products are exact f32: compare with f32 GEMMs, not TF32.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")

    meta = {"device": str(device), "device_name": device_name, "torch": torch.__version__,
            "cuda": torch.version.cuda, "python": platform.python_version(),
            "threads": torch.get_num_threads(), "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "density": args.density, "warmup": args.warmup, "repeats": args.repeats}
    print(f"torch {meta['torch']} (CUDA {meta['cuda']}) on {device_name}", flush=True)
    results = []
    if "copy" not in skip:
        run_copy(args, device, results)
    if "merge" not in skip:
        run_merges(args, device, results)
    if "threshold" not in skip:
        run_thresholds(args, device, results)
    if "cka" not in skip:
        run_cka(args, device, results)
    print_table(results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "results": results}, f, indent=1)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
