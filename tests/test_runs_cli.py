"""The command line: `run` with a layer, a selector, --set values and each target form gives the API's run;
`show` prints the summary (or how far an incomplete run got); bad arguments are named, with exit status 2."""

import numpy as np
import pytest
import torch

import attrfx
from attrfx.runs import cli, store
import _runs_data

BASE = ["run", "--model", "_runs_data:model", "--data", "_runs_data:data", "--batch-size", "8", "--no-progress"]


def test_run_equals_the_api_call(tmp_path):
    argv = [*BASE, "--method", "layer_conductance", "--layer", "fc1", "--target", "predicted",
            "--set", "n_steps=6", "--set", "method=riemann_trapezoid", "--out", str(tmp_path / "cli")]
    assert cli.main(argv) == 0
    api = attrfx.attribute_dataset(attrfx.layer_conductance, _runs_data.model(), _runs_data.data(),
                                   out=tmp_path / "api", layer="fc1", target="predicted", batch_size=8, n_steps=6,
                                   method="riemann_trapezoid", show_progress=False)
    ours = attrfx.load_run(tmp_path / "cli")
    assert ours.settings == api.settings
    assert np.array_equal(ours.attributions[:], api.attributions[:])


def test_a_neuron_method_takes_its_selector_as_json(tmp_path):
    assert cli.main([*BASE, "--method", "neuron_gradient", "--layer", "fc1", "--selector", "3",
                     "--out", str(tmp_path / "run")]) == 0
    x, _ = _runs_data.data().tensors
    expected = attrfx.neuron_gradient(_runs_data.model(), "fc1", x, 3)
    assert torch.equal(torch.from_numpy(attrfx.load_run(tmp_path / "run").attributions[:]), expected)


def test_values_are_json_where_they_parse():
    assert cli.assignments(["n_steps=20", "baselines=0.5", "method=gausslegendre", "target=[1, 2]", "x=null"]) == \
        {"n_steps": 20, "baselines": 0.5, "method": "gausslegendre", "target": (1, 2), "x": None}


def test_show_prints_the_summary_of_a_complete_run(tmp_path, capsys):
    assert cli.main([*BASE, "--method", "integrated_gradients", "--target", "labels", "--set", "n_steps=4",
                     "--out", str(tmp_path / "run")]) == 0
    assert cli.main(["show", str(tmp_path / "run")]) == 0
    shown = capsys.readouterr().out
    summary = attrfx.load_run(tmp_path / "run").summary
    assert "status: complete, 48 examples" in shown
    assert f"mean |a| {summary.mean_abs.mean():.4g}" in shown
    counts = ", ".join(f"{k}: {n} ex" for k, n in enumerate(summary.class_counts.tolist()))
    assert all(part in shown for part in counts.split(", "))
    assert "convergence_delta: |mean|" in shown


def test_show_tells_how_far_an_incomplete_run_got(tmp_path, capsys):
    assert cli.main([*BASE, "--method", "saliency", "--target", "0", "--chunk-size", "8",
                     "--out", str(tmp_path / "run")]) == 0
    (tmp_path / "run" / store.COMPLETE).unlink()
    (tmp_path / "run" / store.COMMITS / "000004.json").unlink()
    assert cli.main(["show", str(tmp_path / "run")]) == 0
    assert "status: incomplete, 5 of 6 chunks committed (continue it with --resume)" in capsys.readouterr().out


@pytest.mark.parametrize("argv,message", [
    (["--model", "nocolon"], "`--model` must be MODULE:FUNCTION (e.g. mypackage.models:make_model); got 'nocolon'."),
    (["--model", "_runs_data:missing"], "`--model` must be a function of module _runs_data; got '_runs_data:missing'."),
    (["--method", "simpson"], "`--method` must be the name of an attrfx method (one of ["),
    (["--set", "n_steps"], "`--set` must be KEY=VALUE with KEY an argument name; got 'n_steps'."),
    (["--target", "label"], "`target` must be None, an int, a tuple of ints, 'labels', 'predicted', or a callable"),
])
def test_bad_arguments_are_named(tmp_path, capsys, argv, message):
    options = {"--model": "_runs_data:model", "--method": "saliency", "--target": "0"}
    options.update(dict(zip(argv[::2], argv[1::2])))
    extra = [item for key, v in options.items() if key != "--set" for item in (key, v)]
    extra += ["--set", options["--set"]] if "--set" in options else []
    assert cli.main(["run", "--data", "_runs_data:data", "--batch-size", "8", "--out", str(tmp_path / "r"),
                     *extra]) == 2
    assert message in capsys.readouterr().err


def test_show_refuses_a_directory_without_a_run(tmp_path, capsys):
    assert cli.main(["show", str(tmp_path)]) == 2
    assert "`DIR` must be a directory holding an attrfx run (with run.json)" in capsys.readouterr().err
