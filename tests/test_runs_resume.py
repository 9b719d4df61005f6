"""Resuming: a real `python -m attrfx run` killed with SIGKILL mid-run, then the same command with --resume,
equals an uninterrupted run exactly, and computes only the chunks that were not committed; a crash between a
chunk's data and its commit record loses nothing and looks complete to no one."""

import dataclasses
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import attrfx
from attrfx.runs import cli, store
import _runs_data

TESTS = pathlib.Path(__file__).resolve().parent
COMMAND = ["run", "--model", "_runs_data:model", "--data", "_runs_data:data", "--method", "integrated_gradients",
           "--target", "labels", "--batch-size", "4", "--chunk-size", "4", "--set", "n_steps=8", "--no-progress"]
CHUNKS = 12  # 48 examples in chunks of 4


def assert_same_run(a, b):
    for name in ("attributions", "index", "labels", "targets", "predictions"):
        assert np.array_equal(getattr(a, name)[:], getattr(b, name)[:]), name
    assert a.diagnostics.keys() == b.diagnostics.keys() == {"convergence_delta"}
    assert np.array_equal(a.diagnostics["convergence_delta"][:], b.diagnostics["convergence_delta"][:])
    for field in dataclasses.fields(a.summary):  # the same rows folded in the same order: equal to the last bit
        assert np.array_equal(getattr(a.summary, field.name), getattr(b.summary, field.name), equal_nan=True), field


def counted(argv):
    """Run the command line in this process; the number of model calls it made."""
    before = _runs_data.CALLS[0]
    assert cli.main(argv) == 0
    return _runs_data.CALLS[0] - before


def test_sigkill_mid_run_then_resume_equals_an_uninterrupted_run(tmp_path):
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(TESTS), "ATTRFX_TEST_SLEEP": "0.03"}
    process = subprocess.Popen([sys.executable, "-m", "attrfx", *COMMAND, "--out", str(out)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 90
    while not (out / store.COMMITS).is_dir() or len(store.committed(out)) < 3:
        assert process.poll() is None, f"the run ended before it was killed: {process.stderr.read().decode()}"
        assert time.monotonic() < deadline, "no chunk committed in time"
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    process.stderr.close()
    done = store.committed(out)
    assert 3 <= len(done) < CHUNKS, "the kill must land mid-run"
    with pytest.raises(attrfx.AttrfxValueError, match=f"incomplete run with {len(done)} of {CHUNKS} chunks"):
        attrfx.load_run(out)

    resumed_calls = counted([*COMMAND, "--out", str(out), "--resume"])
    whole_calls = counted([*COMMAND, "--out", str(tmp_path / "whole")])
    # the whole run attributes 12 batches plus the first example (which lays out the arrays), the same number of
    # model calls each; the resumed run attributes only the batches of the chunks that were not committed
    assert resumed_calls * (CHUNKS + 1) == whole_calls * (CHUNKS - len(done))
    assert store.committed(out) == set(range(CHUNKS))
    assert_same_run(attrfx.load_run(out), attrfx.load_run(tmp_path / "whole"))


def test_a_crash_between_a_chunks_data_and_its_commit_recomputes_that_chunk(tmp_path, monkeypatch):
    out = tmp_path / "crashed"
    write_json = store.write_json

    def crash_at_chunk_5(path, record):
        if path.name == "000005.json":
            raise OSError("disk unplugged")
        write_json(path, record)

    monkeypatch.setattr(store, "write_json", crash_at_chunk_5)
    with pytest.raises(OSError, match="disk unplugged"):
        counted([*COMMAND, "--out", str(out)])
    monkeypatch.setattr(store, "write_json", write_json)
    assert store.committed(out) == {0, 1, 2, 3, 4}
    written = store.open_arrays(out, store.read_layout(out))["index"][20:24]
    assert written.tolist() == [20, 21, 22, 23]  # chunk 5's rows are on disk, yet not committed
    with pytest.raises(attrfx.AttrfxValueError, match="incomplete run with 5 of 12 chunks"):
        attrfx.load_run(out)
    resumed_calls = counted([*COMMAND, "--out", str(out), "--resume"])
    whole_calls = counted([*COMMAND, "--out", str(tmp_path / "whole")])
    assert resumed_calls * (CHUNKS + 1) == whole_calls * (CHUNKS - 5)
    assert_same_run(attrfx.load_run(out), attrfx.load_run(tmp_path / "whole"))


def test_resume_refuses_another_model(tmp_path):
    out = tmp_path / "run"
    counted([*COMMAND, "--out", str(out)])
    _runs_data.model_seed[0] = 1
    try:
        with pytest.raises(attrfx.AttrfxValueError, match=r"differences: model\.sha256 is \"[0-9a-f]+\" in the run"):
            attrfx.attribute_dataset(attrfx.integrated_gradients, _runs_data.model(), _runs_data.data(), out=out,
                                     target="labels", batch_size=4, chunk_size=4, n_steps=8, resume=True)
    finally:
        _runs_data.model_seed[0] = 0


def test_a_run_left_by_two_processes_resumes_in_one(tmp_path):
    """Rank 1 of 2 died before committing anything: its chunks (the odd ones) are done by a single process."""
    out = tmp_path / "run"
    whole_calls = counted([*COMMAND, "--out", str(out)])
    whole = attrfx.load_run(out)
    whole_attributions, whole_mean = whole.attributions[:], whole.summary.mean
    (out / store.COMPLETE).unlink()
    for chunk in range(1, CHUNKS, 2):
        (out / store.COMMITS / f"{chunk:06d}.json").unlink()
    calls = counted([*COMMAND, "--out", str(out), "--resume"])
    assert calls * (CHUNKS + 1) == whole_calls * (CHUNKS // 2)  # only the six odd chunks, one batch each
    resumed = attrfx.load_run(out)
    assert np.array_equal(resumed.attributions[:], whole_attributions)
    np.testing.assert_allclose(resumed.summary.mean, whole_mean, rtol=1e-12)
