"""Attributing a dataset: the runner against a bare loop of the same calls, and 1 against 2 processes.

    .venv/bin/python -m benchmarks.dataset            # about 1-2 min on 2 CPU cores
    .venv/bin/python -m benchmarks.dataset --write    # also writes benchmarks/RESULTS-dataset.md

The workload: integrated gradients (``n_steps=50``, gausslegendre, with the
convergence delta) of the true-class logit of the digits CNN
(:func:`attrfx.demo.digits_cnn`, seeded weights) over scikit-learn's 1,797 8×8
digits, in batches of 32. In one process, interleaved, median of the repetitions:

- ``bare loop``: ``attrfx.integrated_gradients(model, x, target=y, n_steps=50,
  return_convergence_delta=True)`` for each batch, results dropped;
- ``attribute_dataset``: the same calls through the runner, which also runs the
  model once per batch for the predictions, writes every chunk (256 rows) to zarr
  with fsync and a commit record, and folds it into the summaries;
- ``Captum bare loop``: ``IntegratedGradients(model).attribute(...)`` per batch.

Then ``attribute_dataset`` under ``torchrun --nproc_per_node=1`` and ``=2``
(gloo), timed inside the processes from a barrier before the call to the end of
the call on rank 0 (process start-up excluded). Each process runs one thread.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time

if __package__ in (None, ""):
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

import attrfx  # noqa: E402
from attrfx.demo import digits_cnn, load_digits  # noqa: E402

BATCH, N_STEPS = 32, 50
ROOT = pathlib.Path(__file__).resolve().parent.parent


def workload(device: torch.device) -> tuple[torch.nn.Module, list]:
    """The seeded digits CNN on ``device`` and the 1,797 digits as a list of (images, labels) batches of 32."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = digits_cnn().eval().to(device)
    images, labels = load_digits()
    return model, list(zip(images.split(BATCH), labels.split(BATCH)))


def bare_loop(model, batches, device, out=None) -> None:
    for x, y in batches:
        attrfx.integrated_gradients(model, x.to(device), target=y.to(device), n_steps=N_STEPS,
                                    return_convergence_delta=True)


def runner(model, batches, device, out: pathlib.Path) -> None:
    attrfx.attribute_dataset(attrfx.integrated_gradients, model, batches, out=out, target="labels", n_steps=N_STEPS,
                             show_progress=False)


def captum_loop(model, batches, device, out=None) -> None:
    from captum.attr import IntegratedGradients

    ig = IntegratedGradients(model)
    for x, y in batches:
        ig.attribute(x.to(device), target=y.to(device), n_steps=N_STEPS, return_convergence_delta=True)


def one_process(device: torch.device, repetitions: int) -> tuple[dict[str, float], dict[str, float]]:
    """Wall-clock and CPU seconds per pass over the dataset (medians over interleaved repetitions) for each of the
    three loops. CPU time (this process, all its threads) is the steadier measure on a shared machine."""
    model, batches = workload(device)
    loops = {"bare loop (attrfx)": bare_loop, "attribute_dataset": runner, "bare loop (Captum)": captum_loop}
    times: dict[str, list[float]] = {name: [] for name in loops}
    cpu: dict[str, list[float]] = {name: [] for name in loops}
    with tempfile.TemporaryDirectory() as scratch:  # made and removed outside the timings
        runner(model, batches[:2], device, pathlib.Path(scratch) / "warm-up")  # imports, first calls
        for repetition in range(repetitions):
            for name, loop in loops.items():
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start, start_cpu = time.perf_counter(), time.process_time()
                loop(model, batches, device, pathlib.Path(scratch) / str(repetition))
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times[name].append(time.perf_counter() - start)
                cpu[name].append(time.process_time() - start_cpu)
    return ({name: statistics.median(t) for name, t in times.items()},
            {name: statistics.median(t) for name, t in cpu.items()})


def worker(report: str) -> None:
    """One torchrun process: attribute the dataset once (after a warm-up) and, on rank 0, write the seconds."""
    import torch.distributed as dist

    device = attrfx.runs.rank_device()
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    model, batches = workload(device)
    bare_loop(model, batches[:1], device)  # warm-up (the runner itself needs every process on one directory)
    out = pathlib.Path(os.environ["ATTRFX_BENCH_OUT"])
    dist.barrier()
    start = time.perf_counter()
    attrfx.attribute_dataset(attrfx.integrated_gradients, model, batches, out=out, target="labels",
                             n_steps=N_STEPS, show_progress=False)
    seconds = time.perf_counter() - start
    if dist.get_rank() == 0:
        pathlib.Path(report).write_text(json.dumps({"seconds": seconds}))
    dist.destroy_process_group()


def under_torchrun(processes: int) -> float:
    """Seconds of one pass with ``processes`` processes (start-up excluded)."""
    with tempfile.TemporaryDirectory() as scratch:
        report = pathlib.Path(scratch) / "report.json"
        env = {**os.environ, "OMP_NUM_THREADS": "1", "ATTRFX_BENCH_OUT": str(pathlib.Path(scratch) / "run")}
        subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                        f"--nproc_per_node={processes}", "-m", "benchmarks.dataset", "--worker", str(report)],
                       cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
        return json.loads(report.read_text())["seconds"]


def table(single: dict[str, float], cpu: dict[str, float], multi: dict[int, float], examples: int) -> str:
    bare, bare_cpu = single["bare loop (attrfx)"], cpu["bare loop (attrfx)"]
    lines = ["| loop | s per pass | examples/s | ÷ bare loop (attrfx) | CPU s per pass | CPU ÷ bare loop |",
             "|---|---|---|---|---|---|"]
    for name, seconds in single.items():
        lines.append(f"| {name}, 1 process | {seconds:.2f} | {examples / seconds:.0f} | {seconds / bare:.3f} | "
                     f"{cpu[name]:.2f} | {cpu[name] / bare_cpu:.3f} |")
    for processes, seconds in multi.items():
        lines.append(f"| attribute_dataset, torchrun {processes} process{'es' if processes > 1 else ''} | "
                     f"{seconds:.2f} | {examples / seconds:.0f} | {seconds / bare:.3f} | – | – |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--processes", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--write", action="store_true", help="write benchmarks/RESULTS-dataset.md")
    parser.add_argument("--worker", metavar="REPORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker)
        return
    torch.set_num_threads(1)
    device = torch.device(args.device)
    examples = len(load_digits()[1])
    load = os.getloadavg()
    single, cpu = one_process(device, args.repetitions)
    multi = {p: under_torchrun(p) for p in args.processes}
    ratio = single["attribute_dataset"] / single["bare loop (attrfx)"]
    cpu_ratio = cpu["attribute_dataset"] / cpu["bare loop (attrfx)"]
    text = "\n".join([
        "# attrfx benchmarks: attributing a dataset",
        "",
        f"- command: `python -m benchmarks.dataset`; {time.strftime('%Y-%m-%dT%H:%M:%S')}",
        f"- machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}; device `{device}`; "
        f"one thread per process",
        f"- torch {torch.__version__}, Python {platform.python_version()}; load average at start "
        f"{tuple(round(v, 1) for v in load)}, at end {tuple(round(v, 1) for v in os.getloadavg())}",
        f"- workload: integrated gradients (n_steps={N_STEPS}, with the convergence delta) of the true-class logit "
        f"of the digits CNN over {examples} digits, batches of {BATCH}; median of {args.repetitions} interleaved "
        "repetitions (one process); torchrun rows: one pass, timed inside the processes",
        "",
        table(single, cpu, multi, examples),
        "",
        f"Runner overhead at batch {BATCH}: {100 * (ratio - 1):+.1f}% wall clock, {100 * (cpu_ratio - 1):+.1f}% CPU "
        "time (target ≤ 5%).",
        *([f"The load average ({load[0]:.1f}) was above the {os.cpu_count()} cores: other jobs shared them, so the "
           "wall-clock column says more about them than about attrfx; CPU time counts only this process's work."]
          if load[0] > (os.cpu_count() or 1) else []),
    ])
    print(text)
    if args.write:
        (ROOT / "benchmarks" / "RESULTS-dataset.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
