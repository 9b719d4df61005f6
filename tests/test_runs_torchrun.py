"""Two processes under `torchrun --nproc_per_node=2` (gloo on the CPU) each attribute their own chunks and write
them without conflict; the run equals a single-process run, and the summaries are merged across the processes."""

import dataclasses
import json
import os
import pathlib
import subprocess
import sys

import numpy as np

import attrfx
from attrfx.runs import cli, store

TESTS = pathlib.Path(__file__).resolve().parent
COMMAND = ["run", "--model", "_runs_data:model", "--data", "_runs_data:data", "--method", "integrated_gradients",
           "--target", "labels", "--batch-size", "4", "--chunk-size", "4", "--set", "n_steps=8"]


def test_torchrun_with_two_processes_equals_one_process(tmp_path):
    two = tmp_path / "two"
    env = {**os.environ, "PYTHONPATH": str(TESTS), "OMP_NUM_THREADS": "1"}
    launched = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                               "-m", "attrfx", *COMMAND, "--out", str(two)], env=env, capture_output=True, text=True,
                              timeout=300)
    assert launched.returncode == 0, launched.stderr[-3000:]
    writers = {json.loads(p.read_text())["chunk"]: json.loads(p.read_text())["rank"]
               for p in (two / store.COMMITS).glob("*.json")}
    assert writers == {chunk: chunk % 2 for chunk in range(12)}  # disjoint shares, every chunk once
    assert launched.stderr.count("attribute_dataset integrated_gradients: 100%") == 1  # one bar: the first rank's

    assert cli.main([*COMMAND, "--out", str(tmp_path / "one"), "--no-progress"]) == 0
    many, one = attrfx.load_run(two), attrfx.load_run(tmp_path / "one")
    for name in ("attributions", "index", "labels", "targets", "predictions"):
        assert np.array_equal(getattr(many, name)[:], getattr(one, name)[:]), name
    assert np.array_equal(many.diagnostics["convergence_delta"][:], one.diagnostics["convergence_delta"][:])
    assert many.summary.count == one.summary.count == 48
    for field in dataclasses.fields(one.summary):  # merged in another order: equal up to rounding
        ours, theirs = getattr(many.summary, field.name), getattr(one.summary, field.name)
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-15, err_msg=field.name)
