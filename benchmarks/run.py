"""Speed and memory of attrfx against Captum and the bare-autograd floor.

    .venv/bin/python -m benchmarks.run            # full run (~18 min on an idle 2-core CPU machine)
    .venv/bin/python -m benchmarks.run --quick    # a smoke run (< 2 min): n_steps=10, 1 repetition, no K / memory
    .venv/bin/python -m benchmarks.run --device cuda
    # re-measure single rows into another folder (benchmarks/RESULTS.md stays as it is):
    .venv/bin/python -m benchmarks.run --only layer_gradcam/cnn/late,neuron_gradient/mlp --sections main,k --no-memory --out /tmp/bench

Times are medians of interleaved repetitions (attrfx, Captum, floor in
rotating order) in this one process, after one warm-up call each, with
``torch.set_num_threads(2)`` (``--threads``), with glibc's ``malloc`` keeping
freed memory for reuse (:func:`keep_freed_memory`; ``--allocator system`` for
its defaults, under which page faults on fresh memory take 15–55% of a large
call on this VM, a different share each time). Peak memory is measured in a
fresh subprocess per measurement, after one call on two examples (lazy
imports and one-time initialisation): the peak resident set size (CPU;
``VmHWM`` reset through ``/proc/self/clear_refs``) or the peak of
``torch.cuda.max_memory_allocated`` (CUDA), above the level just before the
call; on CPU the subprocess runs with ``MALLOC_MMAP_THRESHOLD_=65536``, so
freed buffers go back to the system and RSS follows live memory. Writes ``benchmarks/RESULTS.md`` and ``benchmarks/results.json``
(``--quick``: ``RESULTS-quick.md``; CUDA: ``RESULTS-cuda.md``). ``--resume``
with ``--sections`` re-measures parts of the last run.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Optional

HERE = Path(__file__).resolve().parent
if __package__ in (None, ""):                      # python benchmarks/run.py
    sys.path.insert(0, str(HERE.parent))

import torch  # noqa: E402

from benchmarks import methods as M  # noqa: E402
from benchmarks.models import NAMES, build  # noqa: E402

THREADS = 2


# ---------------------------------------------------------------- measuring

def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fns: dict[str, Callable], reps: int, device: str, warm: bool = True, inner: int = 1) -> dict[str, float]:
    """Median (and minimum, ``min_…``, and each round's, ``rounds_…``) seconds per call: one warm-up each,
    then ``reps`` interleaved rounds (order rotating), each timing ``inner`` calls in a row (for calls too
    short to time one by one)."""
    names = list(fns)
    for n in names if warm else []:
        fns[n]()
    _sync(device)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(reps):
        for n in names[r % len(names):] + names[:r % len(names)]:
            fn = fns[n]
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            _sync(device)
            times[n].append((time.perf_counter() - t0) / inner)
    return {**{n: statistics.median(v) for n, v in times.items()}, **{f"min_{n}": min(v) for n, v in times.items()},
            **{f"rounds_{n}": v for n, v in times.items()}}


SHORT_CALL_S = 0.01
"""Calls under this are timed in loops that last about this long per repetition."""


ROW_BUDGET_S = 3.0
"""A row gets as many rounds (up to 30) as its floor's calls fill in about this long (``--quick``: a tenth)."""


def repetitions(reps: int, t_floor: float, budget: float = ROW_BUDGET_S) -> tuple[int, int]:
    """``(rounds, calls per round)`` for a row whose floor took ``t_floor`` s: at least ``reps`` rounds,
    more (up to 30) where ``budget`` (:data:`ROW_BUDGET_S`) allows, since one slow round moves the median of three; and
    calls under :data:`SHORT_CALL_S` are looped so a round lasts about that long (one call of 0.3 ms is at
    the mercy of the timer and of whatever ran just before it)."""
    rounds = max(reps, min(30, int(budget / max(t_floor, 1e-4))))
    return rounds, max(1, int(SHORT_CALL_S / max(t_floor, 1e-5)))


def keep_freed_memory() -> bool:
    """Make glibc's ``malloc`` keep freed memory for reuse in this process, as a caching allocator does.

    By default glibc maps every block of 32 MB or more afresh and unmaps it when
    freed (and trims the heap), so each large tensor touches new pages: on this
    VM the page faults took 15–55% of a large CNN call (0.3–0.8 million minor
    faults per call, a different number each time), for attrfx, Captum and the
    floor alike, and rows' ratios swung by ±10% from run to run.
    With no mapped blocks and no trimming, the heap keeps its peak and freed
    blocks are reused: times measure the computation (PyTorch's CPU tuning guide
    recommends tcmalloc or jemalloc for the same reason). False where the C
    library is not glibc (then nothing changes). Memory is measured in separate
    processes, which keep the default allocator.
    """
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_max = -1, -4
    return bool(mallopt(m_mmap_max, 0)) and bool(mallopt(m_trim_threshold, 2 ** 31 - 1))


def allocator_note(kept: bool) -> str:
    """The report's line on the allocator the timings ran with."""
    if kept:
        return ("glibc malloc keeping freed memory for reuse (no mapped blocks, no trimming; "
                "`--allocator system` for glibc's defaults)")
    return "the C library's default malloc"


def add_allocator_option(parser: argparse.ArgumentParser) -> None:
    """``--allocator reuse|system``, shared by the scripts that time calls."""
    parser.add_argument("--allocator", choices=("reuse", "system"), default="reuse",
                        help="timing process: reuse freed memory (default; see keep_freed_memory) or the C "
                             "library's defaults")


def set_allocator(choice: str) -> str:
    """Apply ``--allocator`` to this process; returns :func:`allocator_note`."""
    return allocator_note(keep_freed_memory() if choice == "reuse" else False)


def max_diff(a, b) -> float:
    a = a if isinstance(a, (tuple, list)) else (a,)
    b = b if isinstance(b, (tuple, list)) else (b,)
    return max(float((x.detach().double() - y.detach().double()).abs().max()) for x, y in zip(a, b))


def scale(value, method: str, settings: M.Settings):
    """Captum's trapezoid rule sums to (n-1)/n: compare with its result × n/(n-1)."""
    if M.SPECS[method].compare == "trapezoid":
        return value * (settings.n_steps / (settings.n_steps - 1))
    return value


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(field)


def measure_here(job: dict) -> dict:
    """Run one call of one implementation (in a fresh process) and report its peak memory in MB."""
    torch.set_num_threads(int(os.environ.get("ATTRFX_BENCH_THREADS", THREADS)))
    device = job["device"]
    full = build(job["model"], device)
    settings = M.Settings(**job.get("settings", {}))

    def make(case):
        if job.get("k"):
            sels = M.k_selectors(case, job["where"], job["k"])
            return getattr(M.k_calls(job["method"], case, job["where"], sels, settings), job["impl"])
        if "ibs" in job:
            return _chunked_calls(job["method"], case, job["where"], job["ibs"], settings)[job["impl"]]
        return getattr(M.calls(job["method"], case, job["where"], settings), job["impl"])

    # One call on two examples first: lazy imports and one-time initialisation (torch.func, Captum's
    # hooks, and the ~3 MB torch allocates for its first C++ exception, which a first pass falling back
    # to the inspection raises; one example would broadcast and hide it) land before the baseline, so
    # the number is the call's own working memory.
    make(full._replace(inputs=full.inputs[:2]))()
    fn = make(full)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return {"mb": (torch.cuda.max_memory_allocated() - base) / 2**20}
    with open("/proc/self/clear_refs", "w") as f:     # reset the high-water mark
        f.write("5")
    base = _rss_kb("VmRSS")
    fn()
    return {"mb": (_rss_kb("VmHWM") - base) / 1024}


def measure(job: dict) -> Optional[float]:
    """Peak MB of ``job`` in a fresh subprocess (None if it failed)."""
    cmd = [sys.executable, "-m", "benchmarks.run", "--measure", json.dumps(job)]
    proc = subprocess.run(cmd, cwd=HERE.parent, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": os.environ.get("ATTRFX_BENCH_THREADS", str(THREADS)),
                               # a fixed glibc mmap threshold: blocks of 64 KiB and more are mmapped and returned
                               # when freed, so peak RSS is the call's peak live memory (as on CUDA) rather than
                               # how much freed heap the allocator happened to keep (±50–100 MB run to run)
                               "MALLOC_MMAP_THRESHOLD_": "65536"})
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])["mb"]
    except (IndexError, ValueError, KeyError):
        sys.stderr.write(f"memory measurement failed for {job}: {proc.stderr[-400:]}\n")
        return None


def measure_all(jobs: list[dict], parallel: int) -> list[Optional[float]]:
    with ThreadPoolExecutor(parallel) as pool:
        return list(pool.map(measure, jobs))


def _chunked_calls(method: str, case, where: str, ibs, settings: M.Settings) -> dict[str, Callable]:
    import attrfx
    import captum.attr as ca
    name, m, x, t, n = case.layers[where], case.model, case.inputs, case.target, settings.n_steps
    module, sel = m.get_submodule(name), case.neurons[where]
    if method == "neuron_conductance":
        return {"attrfx": lambda: attrfx.neuron_conductance(m, name, x, sel, target=t, n_steps=n, internal_batch_size=ibs),
                "captum": lambda: ca.NeuronConductance(m, module).attribute(x, sel, target=t, n_steps=n,
                                                                            internal_batch_size=ibs)}
    if method == "neuron_integrated_gradients":
        return {"attrfx": lambda: attrfx.neuron_integrated_gradients(m, name, x, sel, n_steps=n, internal_batch_size=ibs),
                "captum": lambda: ca.NeuronIntegratedGradients(m, module).attribute(x, sel, n_steps=n,
                                                                                    internal_batch_size=ibs)}
    if method == "layer_conductance":
        return {"attrfx": lambda: attrfx.layer_conductance(m, name, x, target=t, n_steps=n, internal_batch_size=ibs),
                "captum": lambda: ca.LayerConductance(m, module).attribute(x, target=t, n_steps=n,
                                                                           internal_batch_size=ibs)}
    raise ValueError(method)


# ---------------------------------------------------------------- sections

def wanted(only: Optional[list[tuple[str, ...]]], method: str, model: str, where: Optional[str] = None) -> bool:
    """Whether a row passes ``--only`` (``METHOD/MODEL[/WHERE]`` entries; None keeps every row)."""
    return only is None or any(o[:2] == (method, model) and (len(o) < 3 or where is None or o[2] == where)
                               for o in only)


def main_table(methods: list[str], models: list[str], reps: int, device: str, settings: M.Settings,
               log, below: Optional[float] = None, only=None, budget: float = ROW_BUDGET_S) -> list[dict]:
    """Time every (model, method, layer); rows get more repetitions (up to 30) where they fit (:func:`repetitions`)."""
    rows = []
    for model_name in models:
        if not any(wanted(only, method, model_name) for method in methods):
            continue
        case = build(model_name, device)
        fz = M.frozen(case.model)
        for method in methods:
            spec = M.SPECS[method]
            if model_name not in spec.models:
                continue
            for where in M.PLACES[spec.kind]:
                if not wanted(only, method, model_name, where):
                    continue
                row = {"model": model_name, "layer": case.layers.get(where, "–"), "where": where, "method": method}
                try:
                    c = M.calls(method, case, where, settings, fz)
                    t0 = time.perf_counter()
                    f = c.floor()
                    t_floor = time.perf_counter() - t0
                    if below is not None and t_floor * 1e3 >= below:
                        continue
                    a, b = c.attrfx(), c.captum()
                    row["diff"] = None if spec.compare == "sampling" else max_diff(a, scale(b, method, settings))
                    same = not isinstance(a, tuple) and a.shape == f.shape and spec.compare != "sampling"
                    row["floor_check"] = max_diff(a, f) if same else None     # the floor computes the same thing
                    row["scale"] = float(b.abs().max())
                    n, inner = repetitions(reps, t_floor, budget)
                    t = timed({"attrfx": c.attrfx, "captum": c.captum, "floor": c.floor}, n, device, inner=inner)
                    row["reps"], row["inner"] = n, inner
                    row.update({f"t_{k}": v for k, v in t.items()})
                except Exception as err:           # report, do not stop the run
                    row["error"] = f"{type(err).__name__}: {err}"[:200]
                rows.append(row)
                log(_row_line(row))
    return rows


def k_section(reps: int, device: str, settings: M.Settings, k: int, log, only=None) -> list[dict]:
    """One attrfx call with K selectors vs K Captum calls vs the K floor (one forward, K backward passes)."""
    rows = []
    every = ("neuron_gradient", "neuron_integrated_gradients", "neuron_conductance")
    plan = [("mlp", "early", every), ("tfm", "early", every), ("cnn", "early", ("neuron_gradient",))]
    for model_name, where, chosen in plan:     # (K path-method Captum calls on the CNN take minutes)
        chosen = [method for method in chosen if wanted(only, method, model_name, where)]
        if not chosen:
            continue
        case = build(model_name, device)
        fz = M.frozen(case.model)
        sels = M.k_selectors(case, where, k)
        for method in chosen:
            row = {"model": model_name, "layer": case.layers[where], "method": method, "k": k}
            try:
                c = M.k_calls(method, case, where, sels, settings, fz)
                a = c.attrfx()
                row["diff"] = max_diff(a, scale(c.captum(), method, settings))
                t0 = time.perf_counter()
                row["floor_check"] = max_diff(a, c.floor())                  # the floor computes the same thing
                n, inner = repetitions(reps, time.perf_counter() - t0)
                t = timed({"attrfx": c.attrfx, "captum": c.captum, "floor": c.floor}, n, device, warm=False,
                          inner=inner)
                row["reps"], row["inner"] = n, inner
                row.update({f"t_{k_}": v for k_, v in t.items()})
            except Exception as err:
                row["error"] = f"{type(err).__name__}: {err}"[:200]
            rows.append(row)
            log(_k_line(row))
    return rows


def _k_line(row: dict) -> str:
    if "error" in row:
        return f"  K={row['k']} {row['model']:4} {row['method']:28} ERROR {row['error']}"
    return (f"  K={row['k']} {row['model']:4} {row['method']:28} attrfx {row['t_attrfx']:8.3f}s  "
            f"{row['k']} Captum calls {row['t_captum']:8.3f}s  floor {row['t_floor']:8.3f}s  "
            f"speed-up {row['t_captum'] / row['t_attrfx']:5.1f}×  Captum/floor {row['t_captum'] / row['t_floor']:5.1f}×  "
            f"attrfx/floor {row['t_attrfx'] / row['t_floor']:5.2f}  diff {row['diff']:.1e}")


CHUNK_PLAN = [("neuron_conductance", "cnn", "early"), ("layer_conductance", "cnn", "late"),
              ("neuron_integrated_gradients", "tfm", "early")]
CHUNK_SIZES = [None, 200, 80, 40]


def chunk_section(device: str, settings: M.Settings, parallel: int, log, only=None) -> list[dict]:
    rows, jobs = [], []
    for method, model_name, where in CHUNK_PLAN:
        if not wanted(only, method, model_name, where):
            continue
        case = build(model_name, device)
        ref = _chunked_calls(method, case, where, None, settings)["attrfx"]()
        for ibs in CHUNK_SIZES:
            out = _chunked_calls(method, case, where, ibs, settings)["attrfx"]()
            rows.append({"method": method, "model": model_name, "layer": case.layers[where], "ibs": ibs,
                         "diff_vs_unchunked": max_diff(out, ref)})
            for impl in ("attrfx", "captum"):
                jobs.append({"model": model_name, "where": where, "method": method, "impl": impl, "ibs": ibs,
                             "device": device, "settings": settings._asdict()})
    mems = measure_all(jobs, parallel)
    for i, row in enumerate(rows):
        row["mem_attrfx"], row["mem_captum"] = mems[2 * i], mems[2 * i + 1]
        log(f"  {row['method']:28} {row['model']} ibs={str(row['ibs']):5} attrfx {row['mem_attrfx']} MB "
            f"Captum {row['mem_captum']} MB  diff vs unchunked {row['diff_vs_unchunked']:.2e}")
    return rows


def memory_for(rows: list[dict], device: str, settings: M.Settings, parallel: int) -> None:
    jobs, where = [], []
    for i, row in enumerate(rows):
        if "error" in row:
            continue
        for impl in ("attrfx", "captum", "floor"):
            jobs.append({"model": row["model"], "where": row["where"], "method": row["method"], "impl": impl,
                         "device": device, "settings": settings._asdict()})
            where.append((i, impl))
    for (i, impl), mb in zip(where, measure_all(jobs, parallel)):
        rows[i][f"mem_{impl}"] = mb


# ---------------------------------------------------------------- reporting

def _fmt(v, spec="{:.2f}") -> str:
    return "–" if v is None else spec.format(v)


def _ratios(row: dict) -> tuple[Optional[float], Optional[float]]:
    if "t_attrfx" not in row:
        return None, None
    return row["t_attrfx"] / row["t_floor"], row["t_captum"] / row["t_attrfx"]


def _row_line(row: dict) -> str:
    if "error" in row:
        return f"  {row['model']:4} {row['where']:5} {row['method']:28} ERROR {row['error']}"
    af, ca = _ratios(row)
    return (f"  {row['model']:4} {row['where']:5} {row['method']:28} floor {row['t_floor'] * 1e3:8.1f} ms  "
            f"attrfx {row['t_attrfx'] * 1e3:8.1f} ms  Captum {row['t_captum'] * 1e3:8.1f} ms  "
            f"attrfx/floor {af:5.2f}  Captum/attrfx {ca:5.2f}  diff {_fmt(row['diff'], '{:.1e}')}")


def _rounds_not_faster(row: dict) -> str:
    """In how many of a row's interleaved rounds Captum took at least as long as attrfx ("k of n")."""
    rounds = list(zip(row.get("t_rounds_attrfx", ()), row.get("t_rounds_captum", ())))
    return f"{sum(c >= a for a, c in rounds)} of {len(rounds)}" if rounds else "not recorded"


def targets(rows: list[dict], krows: list[dict], crows: list[dict]) -> list[str]:
    """Each target of the issue, checked on the measured numbers."""
    out, timed_rows = [], [r for r in rows if "t_attrfx" in r]

    def bound(r):
        return 1.10 if r["t_floor"] >= 0.05 else 1.25

    miss = [r for r in timed_rows if _ratios(r)[0] > bound(r)]
    out.append(f"- attrfx/floor ≤ 1.10 (floor ≥ 50 ms) / ≤ 1.25 (below): "
               f"{len(timed_rows) - len(miss)}/{len(timed_rows)} met"
               + ("" if not miss else "; missed: " + ", ".join(
                   f"{r['method']} {r['model']} {r['where']} ({_ratios(r)[0]:.2f})" for r in miss)))
    ceiling = lambda r: r["t_captum"] / r["t_floor"]      # the most any implementation doing the floor's passes gains
    slow = [r for r in timed_rows if _ratios(r)[1] < 1.0]
    out.append(f"- never slower than Captum: {len(timed_rows) - len(slow)}/{len(timed_rows)} met"
               + ("" if not slow else "; missed (Captum/attrfx; Captum/floor; rounds in which Captum was not "
                  "faster): " + ", ".join(f"{r['method']} {r['model']} {r['where']} ({_ratios(r)[1]:.2f}; "
                                          f"{ceiling(r):.2f}; {_rounds_not_faster(r)})" for r in slow)))
    early = [r for r in timed_rows if r["where"] == "early" and r["method"].startswith("neuron_")]
    need = lambda r: 4.0 if r["method"] == "neuron_feature_ablation" else 2.0
    low = [r for r in early if _ratios(r)[1] < need(r)]
    out.append(f"- ≥ 2× faster than Captum on early-layer neuron methods (≥ 4× ablation): "
               f"{len(early) - len(low)}/{len(early)} met"
               + ("" if not low else "; missed (Captum/attrfx; Captum/floor, the most any implementation "
                      "doing the floor's passes could reach): " + ", ".join(
                   f"{r['method']} {r['model']} ({_ratios(r)[1]:.2f}×; {ceiling(r):.2f}×)" for r in low)))
    kt = [r for r in krows if "t_attrfx" in r]
    klow = [r for r in kt if r["t_captum"] / r["t_attrfx"] < 5]
    if kt:
        out.append(f"- K={kt[0]['k']} neurons ≥ 5× faster than K Captum calls: {len(kt) - len(klow)}/{len(kt)} met"
                   + ("" if not klow else "; missed: " + ", ".join(
                       f"{r['method']} {r['model']} ({r['t_captum'] / r['t_attrfx']:.1f}×; the K floor "
                       f"{r['t_captum'] / r['t_floor']:.1f}×)" if "t_floor" in r else
                       f"{r['method']} {r['model']} ({r['t_captum'] / r['t_attrfx']:.1f}×)" for r in klow)))
    mem = [r for r in rows if r.get("mem_attrfx") is not None and r.get("mem_captum") is not None]
    mhigh = [r for r in mem if r["mem_attrfx"] > r["mem_captum"] * 1.05 + 2]
    out.append(f"- peak memory ≤ Captum's (5% + 2 MB measurement slack): {len(mem) - len(mhigh)}/{len(mem)} met"
               + ("" if not mhigh else "; missed: " + ", ".join(
                   f"{r['method']} {r['model']} {r['where']} ({r['mem_attrfx']:.0f} vs {r['mem_captum']:.0f} MB)"
                   for r in mhigh)))
    if crows:
        worst = max(r["diff_vs_unchunked"] for r in crows)
        out.append(f"- internal_batch_size: results unchanged (max diff {worst:.1e}); memory per setting in "
                   "the chunking table")
    return out


def write_report(path_md: Path, meta: dict, rows, krows, crows, skipped, target_lines) -> None:
    L = [f"# attrfx benchmarks ({meta['device_name']})", "",
         f"- date: {meta['date']}", f"- machine: {meta['machine']}", f"- torch {meta['torch']}, captum "
         f"{meta['captum']}, Python {meta['python']}, {meta['threads']} threads, device `{meta['device']}`, float32",
         f"- load average (1, 5, 15 min) at start {tuple(round(v, 1) for v in meta['load_average_at_start'])}, "
         f"at end {tuple(round(v, 1) for v in meta['load_average_at_end'])}; run complete: {meta['complete']}",
         f"- command: `{meta['command']}`",
         f"- settings: n_steps={meta['settings']['n_steps']}, n_samples={meta['settings']['n_samples']}, "
         f"batch 8 (MLP, CNN) / 4 sequences of 64 (transformer), {meta['reps']} interleaved repetitions "
         "(up to 30 where the floor's calls fill about 3 s, each timing a loop of about 10 ms for calls "
         "shorter than that; "
         "median) after a warm-up",
         f"- allocator (timing): {meta.get('allocator', allocator_note(False))}",
         "- floor: plain torch autograd doing only the passes the method needs (see `benchmarks/methods.py`)",
         "- memory: peak RSS above the level just before the call, in a fresh subprocess per number, with "
         "`MALLOC_MMAP_THRESHOLD_=65536` so that RSS follows live memory (MB)",
         "- diff: max |attrfx − Captum| (Captum × n/(n−1) for riemann_trapezoid); `scale` is max |Captum|;"
         " GradientSHAP samples differ by design (–)", ""]
    if skipped:
        L += [f"Not benchmarked (no spec in benchmarks/methods.py yet): {', '.join(skipped)}", ""]
    L += ["## Targets", ""] + target_lines + [""]
    L += ["## Time and memory", "",
          "| model | layer | method | floor ms | attrfx ms | Captum ms | attrfx/floor | Captum/attrfx |"
          " diff | scale | mem attrfx | mem Captum | mem floor |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            L.append(f"| {r['model']} | {r['layer']} | {r['method']} | error: {r['error']} |||||||||| ")
            continue
        af, ca = _ratios(r)
        L.append(f"| {r['model']} | {r['where']}: `{r['layer']}` | {r['method']} | {r['t_floor'] * 1e3:.1f} | "
                 f"{r['t_attrfx'] * 1e3:.1f} | {r['t_captum'] * 1e3:.1f} | {af:.2f} | {ca:.2f} | "
                 f"{_fmt(r['diff'], '{:.1e}')} | {r['scale']:.1e} | {_fmt(r.get('mem_attrfx'), '{:.0f}')} | "
                 f"{_fmt(r.get('mem_captum'), '{:.0f}')} | {_fmt(r.get('mem_floor'), '{:.0f}')} |")
    if krows:
        L += ["", f"## Many neurons: one attrfx call with a list of K selectors vs K Captum calls", "",
              "The K floor: plain autograd, one forward pass and one backward pass per neuron, parameters detached; "
              "Captum/floor is the most any implementation running dense backward passes can gain over K Captum calls. "
              "Rounds as in the main table (as many as fit in about 3 s of the floor, at least the repetitions asked for).",
              "",
              "| model | layer | method | K | attrfx s | K Captum calls s | K floor s | speed-up | Captum/floor |"
              " attrfx/floor | diff |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in krows:
            if "error" in r:
                L.append(f"| {r['model']} | {r['layer']} | {r['method']} | {r['k']} | error: {r['error']} |||||||")
                continue
            floor = r.get("t_floor")
            L.append(f"| {r['model']} | `{r['layer']}` | {r['method']} | {r['k']} | {r['t_attrfx']:.3f} | "
                     f"{r['t_captum']:.3f} | {_fmt(floor, '{:.3f}')} | {r['t_captum'] / r['t_attrfx']:.1f}× | "
                     f"{_fmt(floor and r['t_captum'] / floor, '{:.1f}×')} | "
                     f"{_fmt(floor and r['t_attrfx'] / floor)} | {r['diff']:.1e} |")
    if crows:
        L += ["", "## internal_batch_size: peak memory (MB) and the result", "",
              "| method | model | layer | internal_batch_size | mem attrfx | mem Captum | max diff vs unchunked |",
              "|---|---|---|---|---|---|---|"]
        for r in crows:
            L.append(f"| {r['method']} | {r['model']} | `{r['layer']}` | {r['ibs'] if r['ibs'] is not None else 'None'} | "
                     f"{_fmt(r['mem_attrfx'], '{:.0f}')} | {_fmt(r['mem_captum'], '{:.0f}')} | "
                     f"{r['diff_vs_unchunked']:.1e} |")
    notes = HERE / "NOTES.md"
    if notes.exists():
        L += ["", notes.read_text().strip()]
    path_md.write_text("\n".join(L) + "\n")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: n_steps = n_samples = 10, 1 repetition, no memory / K / chunk sections")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--reps", type=int, default=None, help="timed repetitions (default 3, quick 1)")
    ap.add_argument("--models", default=",".join(NAMES), help="comma-separated subset of mlp,cnn,tfm")
    ap.add_argument("--methods", default=None, help="comma-separated subset of the attrfx methods")
    ap.add_argument("--threads", type=int, default=THREADS, help="torch threads (default 2)")
    ap.add_argument("--k", type=int, default=64, help="neurons in the many-neurons section")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--resume", action="store_true", help="start from the last results.json (re-measured rows replace)")
    ap.add_argument("--sections", default="main,k,memory,chunk", help="comma-separated: main,k,memory,chunk")
    ap.add_argument("--below", type=float, default=None,
                    help="main table: only rows whose floor (last run, or warm-up) is below this many ms")
    ap.add_argument("--only", default=None,
                    help="comma-separated METHOD/MODEL[/WHERE] rows (e.g. layer_gradcam/cnn/late): only these, in "
                         "every section chosen; pair with --out elsewhere to keep the full report")
    ap.add_argument("--out", default=str(HERE), help="folder for RESULTS.md and results.json")
    add_allocator_option(ap)
    ap.add_argument("--measure", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.measure:
        print(json.dumps(measure_here(json.loads(args.measure))))
        return

    allocator = set_allocator(args.allocator)
    threads = args.threads
    torch.set_num_threads(threads)
    os.environ["ATTRFX_BENCH_THREADS"] = str(threads)      # for the memory subprocesses
    load = os.getloadavg()
    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    settings = M.Settings(n_steps=10, n_samples=10) if args.quick else M.Settings()
    reps = args.reps or (1 if args.quick else 3)
    benchmarked, skipped = M.available()
    if args.methods:
        benchmarked = [m for m in benchmarked if m in args.methods.split(",")]
    models = args.models.split(",")
    only = [tuple(o.split("/")) for o in args.only.split(",")] if args.only else None
    parallel = 1 if device.startswith("cuda") else 2
    start = time.time()
    log = lambda s: print(s, flush=True)

    import captum
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    suffix = ("" if device == "cpu" else "-" + device.replace(":", "")) + ("-quick" if args.quick else "")

    def save(rows, krows, crows, done: bool) -> list[str]:
        """Write the report so far (each section is saved as soon as it is measured)."""
        meta = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "device": device,
                "device_name": torch.cuda.get_device_name() if device.startswith("cuda") else "CPU",
                "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
                "torch": torch.__version__, "captum": captum.__version__, "python": platform.python_version(),
                "command": " ".join(["python -m benchmarks.run"] + (argv if argv is not None else sys.argv[1:])),
                "threads": threads, "allocator": allocator, "load_average_at_start": load, "load_average_at_end": os.getloadavg(),
                "complete": done, "settings": settings._asdict(), "reps": reps,
                "seconds": round(time.time() - start, 1)}
        target_lines = targets(rows, krows, crows)
        (out / f"results{suffix}.json").write_text(json.dumps(
            {"meta": meta, "rows": rows, "k_neurons": krows, "internal_batch_size": crows,
             "targets": target_lines, "not_benchmarked": skipped}, indent=1))
        write_report(out / f"RESULTS{suffix}.md", meta, rows, krows, crows, skipped, target_lines)
        return target_lines

    sections = set(args.sections.split(",")) - ({"k", "memory", "chunk"} if args.quick else set())
    if args.no_memory:
        sections -= {"memory", "chunk"}
    rows, krows, crows = [], [], []
    if args.resume:     # keep the last run's numbers; re-measure only the sections asked for
        last = json.loads((out / f"results{suffix}.json").read_text())
        rows, krows, crows = last["rows"], last["k_neurons"], last["internal_batch_size"]
        log(f"kept {len(rows)} rows from results{suffix}.json")
    if "main" in sections:
        log(f"main table: {len(benchmarked)} methods, models {models}, {reps} reps, {threads} threads")
        fresh = main_table(benchmarked, models, reps, device, settings, log, args.below, only,
                           ROW_BUDGET_S / 10 if args.quick else ROW_BUDGET_S)
        key = lambda r: (r["model"], r["where"], r["method"])
        old = {key(r): r for r in rows}
        for r in fresh:      # memory numbers of re-timed rows are kept
            r.update({k: v for k, v in old.get(key(r), {}).items() if k.startswith("mem_")})
        fresh_keys = {key(r) for r in fresh}
        rows = [r for r in rows if key(r) not in fresh_keys] + fresh
        order = {(m, w, meth): i for i, (m, w, meth) in enumerate(
            (m, w, meth) for m in NAMES for meth in M.SPECS for w in ("early", "late"))}
        rows.sort(key=lambda r: order.get(key(r), len(order)))
        save(rows, krows, crows, False)
    if "k" in sections:
        log(f"many neurons (K={args.k})")
        fresh = k_section(reps, device, settings, args.k, log, only)
        kept = {(r["model"], r["method"]) for r in fresh}
        krows = [r for r in krows if (r["model"], r["method"]) not in kept] + fresh
        save(rows, krows, crows, False)
    if "memory" in sections:
        log("memory (one subprocess per number)")
        memory_for(rows, device, settings, parallel)
        save(rows, krows, crows, False)
    if "chunk" in sections:
        log("internal_batch_size")
        crows = chunk_section(device, settings, parallel, log, only)
    log("\n".join(save(rows, krows, crows, True)))
    log(f"done in {round(time.time() - start, 1)} s; wrote {out / f'RESULTS{suffix}.md'}")


if __name__ == "__main__":
    main()
