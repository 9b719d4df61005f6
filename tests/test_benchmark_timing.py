"""The benchmark's timing loop: interleaved rounds, short calls looped within a round."""

import subprocess
import sys
from pathlib import Path

from benchmarks import run


def test_short_calls_are_looped_and_every_callable_runs_alike():
    calls = {"a": 0, "b": 0}

    def count(name):
        def fn():
            calls[name] += 1
        return fn

    t = run.timed({n: count(n) for n in calls}, reps=4, device="cpu", inner=5)
    assert calls == {"a": 1 + 4 * 5, "b": 1 + 4 * 5}           # one warm-up, then 4 rounds of 5 calls
    assert set(t) == {"a", "b", "min_a", "min_b", "rounds_a", "rounds_b"}
    assert all(t[f"min_{n}"] <= t[n] for n in calls)
    assert all(len(t[f"rounds_{n}"]) == 4 and min(t[f"rounds_{n}"]) == t[f"min_{n}"] for n in calls)


def test_a_miss_against_captum_says_in_how_many_rounds_captum_was_not_faster():
    row = {"model": "m", "where": "late", "method": "neuron_gradient", "t_floor": 1.0, "t_attrfx": 1.02,
           "t_captum": 1.01, "t_rounds_attrfx": [1.0, 1.02, 1.03, 1.05], "t_rounds_captum": [1.01, 1.0, 1.03, 1.0]}
    (line,) = [t for t in run.targets([row], [], []) if "never slower" in t]
    assert line.endswith("neuron_gradient m late (0.99; 1.01; 2 of 4)")
    del row["t_rounds_attrfx"]
    (line,) = [t for t in run.targets([row], [], []) if "never slower" in t]
    assert line.endswith("(0.99; 1.01; not recorded)")


def test_repetitions_loop_only_short_calls():
    assert run.repetitions(3, 2.0) == (3, 1)                    # a long call: the rounds asked for, one call each
    rounds, inner = run.repetitions(3, 0.2)
    assert rounds == 15 and inner == 1                          # as many rounds as fit in about 3 s
    assert run.repetitions(3, 0.05) == (30, 1)                  # at most 30
    assert run.repetitions(1, 0.125, budget=0.5) == (4, 1)      # a smaller budget (--quick): fewer rounds
    rounds, inner = run.repetitions(3, 0.0005)
    assert rounds == 30 and inner == 20                         # under 10 ms: 20 calls of 0.5 ms per round


FAULTS_OF_A_FRESH_BUFFER = """
import resource, sys, torch
from benchmarks import run
kept = run.keep_freed_memory() if sys.argv[1] == "keep" else False
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(2):                       # 64 MB, allocated and freed: the heap reaches its size
    torch.ones(1 << 24)
before = faults()
for _ in range(10):
    torch.ones(1 << 24)
print(kept, faults() - before)
"""


def _faults_of_fresh_buffers(mode: str) -> tuple[str, int]:
    done = subprocess.run([sys.executable, "-c", FAULTS_OF_A_FRESH_BUFFER, mode], capture_output=True, text=True,
                          check=True, cwd=Path(__file__).resolve().parents[1])
    kept, faults = done.stdout.split()
    return kept, int(faults)


def test_kept_freed_memory_is_reused_without_page_faults():
    # glibc by default maps each 64 MB buffer afresh and unmaps it when freed: every page faults again
    kept, faults = _faults_of_fresh_buffers("keep")
    if kept == "False":                  # not glibc: the allocator is left as it is, and says so
        assert run.allocator_note(False).startswith("the C library's default")
        return
    _, default_faults = _faults_of_fresh_buffers("default")
    assert default_faults > 10 * 16_000  # 16,384 pages of 4 kB per buffer, each time
    assert faults <= 2 * 16_384          # pages kept (the heap may still settle once or twice)
