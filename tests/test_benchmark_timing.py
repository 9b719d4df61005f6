"""The benchmark's timing loop: interleaved rounds, short calls looped within a round."""

from benchmarks import run


def test_short_calls_are_looped_and_every_callable_runs_alike():
    calls = {"a": 0, "b": 0}

    def count(name):
        def fn():
            calls[name] += 1
        return fn

    t = run.timed({n: count(n) for n in calls}, reps=4, device="cpu", inner=5)
    assert calls == {"a": 1 + 4 * 5, "b": 1 + 4 * 5}           # one warm-up, then 4 rounds of 5 calls
    assert set(t) == {"a", "b", "min_a", "min_b"}
    assert all(t[f"min_{n}"] <= t[n] for n in calls)


def test_repetitions_loop_only_short_calls():
    assert run.repetitions(3, 2.0) == (3, 1)                    # a long call: the rounds asked for, one call each
    rounds, inner = run.repetitions(3, 0.05)
    assert rounds > 3 and inner == 1                            # under 0.1 s: more rounds
    rounds, inner = run.repetitions(3, 0.0005)
    assert rounds == 30 and inner == 20                         # under 10 ms: 20 calls of 0.5 ms per round
