"""attribute_dataset and load_run: each stored row is the method's own result on its batch; data forms, targets,
layer and neuron methods, tuple inputs, seeded sampling, streaming chunk by chunk, and every bad input named."""

import functools
import json
import re

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import attrfx
from attrfx.axioms import state_changes, state_of
from attrfx.runs import store
from attrfx.runs.runner import batch_generator
import _runs_data
from models import MultiInput, seeded

V, T = attrfx.AttrfxValueError, attrfx.AttrfxTypeError


def model():
    return _runs_data.model()


def run(tmp_path, method, data, name="run", /, **kwargs):
    return attrfx.attribute_dataset(method, model() if "net" not in kwargs else kwargs.pop("net"), data,
                                    out=tmp_path / name, show_progress=False, **kwargs)


def rows(array):
    return torch.from_numpy(np.asarray(array[:]))


def per_batch(call, batches):
    """``call(x, y)`` on each batch, results concatenated along the examples (the oracle: the method itself)."""
    results = [call(x, y) for x, y in batches]
    if isinstance(results[0], tuple):
        return tuple(torch.cat([r[i] for r in results]) for i in range(len(results[0])))
    return torch.cat(results)


CASES = {
    "integrated gradients, target from the labels": (
        attrfx.integrated_gradients, dict(target="labels", n_steps=8),
        lambda net, x, y: attrfx.integrated_gradients(net, x, target=y, n_steps=8, return_convergence_delta=True)),
    "layer conductance, fixed target": (
        attrfx.layer_conductance, dict(layer="fc1", target=1, n_steps=6),
        lambda net, x, y: attrfx.layer_conductance(net, "fc1", x, target=1, n_steps=6, return_convergence_delta=True)),
    "neuron integrated gradients, a selector": (
        attrfx.neuron_integrated_gradients, dict(layer="fc1", selector=2, n_steps=5),
        lambda net, x, y: attrfx.neuron_integrated_gradients(net, "fc1", x, 2, n_steps=5)),
    "saliency, the predicted class": (
        attrfx.saliency, dict(target="predicted", abs=False),
        lambda net, x, y: attrfx.saliency(net, x, target=net(x).argmax(1), abs=False)),
    "input x gradient, a callable target": (
        attrfx.input_x_gradient, dict(target=lambda outputs, labels: (labels + 1) % 3),
        lambda net, x, y: attrfx.input_x_gradient(net, x, target=(y + 1) % 3)),
    "deeplift with baselines, delta": (
        attrfx.deeplift, dict(target=0, baselines=0.5),
        lambda net, x, y: attrfx.deeplift(net, x, target=0, baselines=0.5, return_convergence_delta=True)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_row_is_the_method_on_its_batch(tmp_path, case):
    method, kwargs, oracle = CASES[case]
    batches = _runs_data.batches(8)
    result = run(tmp_path, method, batches, chunk_size=16, **kwargs)
    expected = per_batch(lambda x, y: oracle(model(), x, y), batches)
    attributions, delta = expected if isinstance(expected, tuple) else (expected, None)
    assert torch.equal(rows(result.attributions), attributions)
    if delta is None:
        assert result.diagnostics == {}
    else:
        assert torch.equal(rows(result.diagnostics["convergence_delta"]), delta)
    assert np.array_equal(result.index[:], np.arange(48))
    assert np.array_equal(result.labels[:], _runs_data.data().tensors[1].numpy())


def test_targets_and_predictions_are_stored_per_example(tmp_path):
    x, y = _runs_data.data().tensors
    predicted = model()(x).argmax(1)
    by_label = run(tmp_path, attrfx.saliency, _runs_data.batches(), "labels", target="labels")
    by_prediction = run(tmp_path, attrfx.saliency, _runs_data.batches(), "predicted", target="predicted")
    fixed = run(tmp_path, attrfx.saliency, _runs_data.batches(), "fixed", target=2)
    assert torch.equal(rows(by_label.targets), y) and torch.equal(rows(by_label.predictions), predicted)
    assert torch.equal(rows(by_prediction.targets), predicted)
    assert torch.equal(rows(fixed.targets), torch.full((48,), 2))
    neuron = run(tmp_path, attrfx.neuron_gradient, _runs_data.batches(), "neuron", layer="fc1", selector=0)
    assert neuron.targets is None


def test_tuple_inputs_give_a_tuple_of_arrays_and_summaries(tmp_path):
    net = seeded(MultiInput)
    g = torch.Generator().manual_seed(3)
    batches = [((torch.randn(4, 4, generator=g, dtype=torch.float64), torch.randn(4, 3, generator=g,
                                                                                  dtype=torch.float64)),
                torch.tensor([0, 1, 1, 0])) for _ in range(3)]
    result = run(tmp_path, attrfx.integrated_gradients, batches, net=net, target="labels", n_steps=6)
    expected = per_batch(lambda x, y: attrfx.integrated_gradients(net, x, target=y, n_steps=6), batches)
    assert isinstance(result.attributions, tuple) and isinstance(result.summary, tuple)
    for stored, wanted, summary in zip(result.attributions, expected, result.summary):
        assert torch.equal(rows(stored), wanted)
        np.testing.assert_allclose(summary.mean, wanted.mean(0).numpy(), rtol=1e-12)


def test_every_form_of_data_gives_the_same_run(tmp_path):
    dataset = _runs_data.data()
    forms = {"loader": dict(data=DataLoader(dataset, batch_size=4)),
             "loader with a worker": dict(data=DataLoader(dataset, batch_size=4, num_workers=1)),
             "dataset": dict(data=dataset, batch_size=4),
             "batches": dict(data=_runs_data.batches(4))}
    results = {name: run(tmp_path, attrfx.saliency, form.pop("data"), name, target="labels", **form)
               for name, form in forms.items()}
    first = results["batches"]
    for result in results.values():
        assert np.array_equal(result.attributions[:], first.attributions[:])
        assert np.array_equal(result.summary.mean, first.summary.mean)


def test_chunks_are_committed_as_they_are_made(tmp_path):
    """A chunk (2 batches here) is written while the next one is computed, and committed before the one after
    starts: memory holds two chunks at most, never the run."""
    seen = []

    def target(outputs, labels):
        seen.append(len(store.committed(tmp_path / "run")))
        return labels

    run(tmp_path, attrfx.saliency, _runs_data.batches(4), target=target, chunk_size=8)
    assert seen[0] == 0 and len(seen) == 13  # the first call lays out the arrays, then 12 batches
    for batch, committed in enumerate(seen[1:]):
        assert max(batch // 2 - 1, 0) <= committed <= batch // 2, (batch, committed)
    assert store.committed(tmp_path / "run") == set(range(6))


def test_sampling_draws_each_batch_from_the_seed_and_its_first_row(tmp_path):
    generator = torch.Generator().manual_seed(5)
    state = generator.get_state()
    kwargs = dict(target="labels", baselines=torch.zeros(3, 6, dtype=torch.float64), n_samples=4, stdevs=0.1,
                  generator=generator)
    small = run(tmp_path, attrfx.gradient_shap, _runs_data.batches(4), "small", chunk_size=4, **kwargs)
    large = run(tmp_path, attrfx.gradient_shap, _runs_data.batches(4), "large", chunk_size=12, **kwargs)
    assert torch.equal(generator.get_state(), state)  # the caller's generator is not advanced
    assert np.array_equal(small.attributions[:], large.attributions[:])
    x, y = _runs_data.batches(4)[2]
    direct = attrfx.gradient_shap(model(), x, kwargs["baselines"], target=y, n_samples=4, stdevs=0.1,
                                  generator=batch_generator(5, 8, torch.device("cpu")))
    assert torch.equal(rows(small.attributions)[8:12], direct)


def test_the_model_is_left_as_it_was(tmp_path):
    net = model()
    before = state_of(net)
    run(tmp_path, attrfx.integrated_gradients, _runs_data.batches(), net=net, target="labels", n_steps=4)
    assert state_changes(before, state_of(net)) == []


def test_the_progress_bar_counts_examples_on_stderr(tmp_path, capsys):
    attrfx.attribute_dataset(attrfx.saliency, model(), _runs_data.batches(), out=tmp_path / "bar", target=0)
    err = capsys.readouterr().err
    assert "attribute_dataset saliency" in err and "48/48" in err and "example/s" in err
    run(tmp_path, attrfx.saliency, _runs_data.batches(), "quiet", target=0)
    assert capsys.readouterr().err == ""


def test_resuming_a_complete_run_computes_nothing(tmp_path):
    first = run(tmp_path, attrfx.saliency, _runs_data.batches(), target=0)
    calls = _runs_data.CALLS[0]
    again = run(tmp_path, attrfx.saliency, _runs_data.batches(), target=0, resume=True)
    assert _runs_data.CALLS[0] == calls
    assert np.array_equal(again.attributions[:], first.attributions[:])


def test_a_run_stopped_by_an_error_does_not_load_and_resumes(tmp_path):
    good = _runs_data.batches(4)
    with pytest.raises(V, match=re.escape("attribute_dataset: `data (batch 7)` must be")):
        run(tmp_path, attrfx.saliency, _LateError(good, 7), target=0, chunk_size=8)
    assert store.committed(tmp_path / "run") == {0, 1, 2}
    with pytest.raises(V, match="an incomplete run with 3 of 6 chunks committed"):
        attrfx.load_run(tmp_path / "run")
    resumed = run(tmp_path, attrfx.saliency, good, target=0, chunk_size=8, resume=True)
    whole = run(tmp_path, attrfx.saliency, good, "whole", target=0, chunk_size=8)
    assert np.array_equal(resumed.attributions[:], whole.attributions[:])


class _LateError(list):
    """A list of batches whose batch ``bad`` is a dict when fetched for attribution (as a DataLoader's transform
    may fail late), though it looked right when the list was first checked."""

    def __init__(self, batches, bad):
        super().__init__(batches)
        self.bad = bad

    def __getitem__(self, i):
        return {"x": super().__getitem__(i)[0]} if i == self.bad else super().__getitem__(i)


def _holding(tmp_path, what):
    out = tmp_path / "held"
    if what == "run":
        run(tmp_path, attrfx.saliency, _runs_data.batches(), "held", target=0)
    else:
        out.mkdir()
        (out / "notes.txt").write_text("mine")
    return out


x4 = torch.zeros(4, 6, dtype=torch.float64)
BAD = {
    "a batch of the wrong structure":
        (V, lambda tmp: run(tmp, attrfx.saliency, [x4, {"x": x4}], target=0),
         "`data (batch 1)` must be a tensor (inputs), a tuple of tensors ((x1, x2)), or a pair (inputs, labels) "
         "with 1-d labels; got dict."),
    "labels that are not one per example":
        (V, lambda tmp: run(tmp, attrfx.saliency, [(x4, torch.zeros(4, 1))], target=0),
         "`data (batch 0)` must be a tensor (inputs), [...]; got (tensor (4, 6), tensor (4, 1))."),
    "batches of uneven sizes":
        (V, lambda tmp: run(tmp, attrfx.saliency, [x4, x4[:3], x4], target=0),
         "`data` must be batches of one size except a shorter last one (batch 0 has 4 examples); got batch 1 with "
         "3 examples."),
    "an empty dataset":
        (V, lambda tmp: run(tmp, attrfx.saliency, torch.zeros(0, 6), target=0, batch_size=4),
         "`data` must be at least one example, in batches of at least one; got 0 examples in batches of 4."),
    "a shuffling DataLoader":
        (V, lambda tmp: run(tmp, attrfx.saliency, DataLoader(_runs_data.data(), batch_size=4, shuffle=True),
                            target=0),
         "`data` must be a DataLoader that reads the dataset in order [...]; got a DataLoader with sampler "
         "RandomSampler."),
    "a generator of batches":
        (T, lambda tmp: run(tmp, attrfx.saliency, (b for b in [x4]), target=0),
         "`data` must be a DataLoader, a list of batches, or a dataset of examples with batch_size=; got generator."),
    "batch_size with a DataLoader":
        (V, lambda tmp: run(tmp, attrfx.saliency, DataLoader(_runs_data.data(), batch_size=4), target=0,
                            batch_size=8),
         "`batch_size` must be None for a DataLoader (its own batch_size is used); got 8."),
    "an output directory holding another run":
        (V, lambda tmp: run(tmp, attrfx.saliency, _runs_data.batches(), "held", target=0, abs=False)
         if _holding(tmp, "run") else None,
         "`out` must be a new or empty directory (pass resume=True to continue the run it holds, whose settings "
         "must then match); got '...held', which holds a run of attrfx.methods.gradient.saliency."),
    "an output directory holding other files":
        (V, lambda tmp: run(tmp, attrfx.saliency, _runs_data.batches(), "held", target=0)
         if _holding(tmp, "files") else None,
         "`out` must be a new or empty directory, or one holding an attrfx run; got '...held', which holds other "
         "files (e.g. 'notes.txt')."),
    "resuming with other settings":
        (V, lambda tmp: run(tmp, attrfx.saliency, _runs_data.batches(), "held", target=0, abs=False, resume=True)
         if _holding(tmp, "run") else None,
         "`resume` must be a call with the settings of the run in `out` (its method, arguments, model, data and "
         "chunking); got differences: arguments.abs is null in the run, false now."),
    "a method that needs baselines without them":
        (V, lambda tmp: run(tmp, attrfx.gradient_shap, _runs_data.batches(), target=0),
         "`baselines` must be passed (as baselines=...) because gradient_shap requires it; got no baselines."),
    "a layer method without its layer":
        (V, lambda tmp: run(tmp, attrfx.layer_conductance, _runs_data.batches(), target=0),
         "`layer` must be passed (as layer=...) because layer_conductance requires it; got no layer."),
    "an argument the method does not take":
        (V, lambda tmp: run(tmp, attrfx.saliency, _runs_data.batches(), target=0, n_steps=8),
         "`n_steps` must be an argument of saliency (one of ['abs', 'additional_forward_args', 'inputs', "
         "'target']); got an argument it does not take."),
    "a target for a neuron method":
        (V, lambda tmp: run(tmp, attrfx.neuron_gradient, _runs_data.batches(), layer="fc1", selector=0, target=1),
         "`target` must be None for neuron_gradient, which explains a neuron or a layer, not an output (choose "
         "what it explains with its own arguments, e.g. selector=); got 1."),
    "an unknown target":
        (V, lambda tmp: run(tmp, attrfx.saliency, _runs_data.batches(), target="label"),
         "`target` must be None, an int, a tuple of ints, 'labels', 'predicted', or a callable(outputs, labels) "
         "giving a batch's targets; got 'label'."),
    "target='labels' without labels":
        (V, lambda tmp: run(tmp, attrfx.saliency, [x4, x4], target="labels"),
         "`target` must be 'labels' only for data with labels ((inputs, labels) batches); got a batch without "
         "labels."),
    "a chunk that is not whole batches":
        (V, lambda tmp: run(tmp, attrfx.saliency, _runs_data.batches(4), target=0, chunk_size=6),
         "`chunk_size` must be a multiple of the batch size (4): chunks are whole batches; got 6."),
    "a list of selectors":
        (V, lambda tmp: run(tmp, attrfx.neuron_gradient, _runs_data.batches(4), layer="fc1", selector=[0, 1]),
         "`method` must be a method giving one attribution row per example (1 in this batch); got a result of "
         "shape (2, 1, 6) (a list of selectors puts the examples in dim 1: attribute one selector per run)."),
    "a generator that is not one":
        (T, lambda tmp: run(tmp, attrfx.gradient_shap, _runs_data.batches(4), target=0, baselines=x4, generator=5),
         "`generator` must be a torch.Generator (each batch draws from one seeded from it and the batch's first "
         "row, so results do not depend on sharding or resuming); got int."),
    "a method that is not a function":
        (T, lambda tmp: run(tmp, "saliency", _runs_data.batches(4), target=0),
         "`method` must be an attrfx method (a function such as attrfx.integrated_gradients); got str."),
    "an output directory that is not a path":
        (T, lambda tmp: attrfx.attribute_dataset(attrfx.saliency, model(), _runs_data.batches(), out=3, target=0),
         "`out` must be a directory path (str or os.PathLike); got int."),
    "resume that is not a flag":
        (T, lambda tmp: run(tmp, attrfx.saliency, _runs_data.batches(), target=0, resume="yes"),
         "`resume` must be True or False; got str."),
}


@pytest.mark.parametrize("situation", sorted(BAD))
def test_bad_input_is_named(tmp_path, situation):
    error, call, message = BAD[situation]
    with pytest.raises((V, T)) as info:
        call(tmp_path)
    assert type(info.value) is error
    pattern = "".join({"[...]": ".*", "...": ".*"}.get(p, re.escape(p))
                      for p in re.split(r"(\[\.\.\.\]|\.\.\.)", "attribute_dataset: " + message))
    assert re.fullmatch(pattern, str(info.value)), str(info.value)


def test_load_run_refuses_what_is_not_a_complete_run(tmp_path):
    with pytest.raises(V, match=re.escape("`out` must be a directory holding an attrfx run (with run.json); got")):
        attrfx.load_run(tmp_path)
    partial = tmp_path / "partial"
    run(tmp_path, attrfx.saliency, _runs_data.batches(), "partial", target=0, chunk_size=8)
    (partial / store.COMPLETE).unlink()
    (partial / store.COMMITS / "000003.json").unlink()
    with pytest.raises(V, match="an incomplete run with 5 of 6 chunks committed"):
        attrfx.load_run(partial)


def test_the_arrays_read_with_zarr_alone(tmp_path):
    import zarr

    result = run(tmp_path, attrfx.saliency, _runs_data.batches(), target="labels")
    group = zarr.open_group(tmp_path / "run" / store.ARRAYS, mode="r")
    assert np.array_equal(np.asarray(group["attributions/0"]), result.attributions[:])
    assert np.array_equal(np.asarray(group["summary/0/class_counts"]),
                          np.bincount(_runs_data.data().tensors[1].numpy(), minlength=3))
    settings = json.loads((tmp_path / "run" / store.RUN).read_text())
    assert settings["method"] == {"callable": "attrfx.methods.gradient.saliency"} and settings["target"] == "labels"


def test_a_partial_method_is_identified_by_its_function_and_arguments(tmp_path):
    smooth = functools.partial(attrfx.noise_tunnel, attrfx.saliency)
    result = run(tmp_path, smooth, _runs_data.batches(), target=0, nt_samples=2, stdevs=0.1,
                 generator=torch.Generator().manual_seed(0))
    assert result.settings["method"]["partial"] == {"callable": "attrfx.methods.tunnel.noise_tunnel"}
    assert result.attributions.shape == (48, 6)


def test_adaptive_integration_stores_its_convergence_per_example(tmp_path):
    batches = _runs_data.batches(8)
    result = run(tmp_path, attrfx.neuron_integrated_gradients, batches, layer="fc1", selector=1, n_steps="auto",
                 tolerance=1e-4)
    direct = [attrfx.neuron_integrated_gradients(model(), "fc1", x, 1, n_steps="auto", tolerance=1e-4,
                                                 return_convergence_delta=True) for x, _ in batches]
    assert torch.equal(rows(result.attributions), torch.cat([a for a, _ in direct]))
    assert sorted(result.diagnostics) == ["convergence_converged", "convergence_delta", "convergence_evaluations"]
    for field in ("delta", "evaluations", "converged"):
        assert torch.equal(rows(result.diagnostics[f"convergence_{field}"]),
                           torch.cat([getattr(c, field) for _, c in direct]))


def test_the_quadrature_argument_called_method_passes_through(tmp_path):
    result = run(tmp_path, attrfx.integrated_gradients, _runs_data.batches(8), target=0, n_steps=5,
                 method="riemann_left")
    x, _ = _runs_data.data().tensors
    assert torch.equal(rows(result.attributions),
                       attrfx.integrated_gradients(model(), x, target=0, n_steps=5, method="riemann_left"))
    assert result.settings["arguments"]["method"] == "riemann_left"


def test_resuming_with_another_generator_seed_is_refused(tmp_path):
    kwargs = dict(target=0, baselines=torch.zeros(2, 6, dtype=torch.float64), n_samples=2)
    run(tmp_path, attrfx.gradient_shap, _runs_data.batches(), generator=torch.Generator().manual_seed(1), **kwargs)
    with pytest.raises(V, match=re.escape("differences: arguments.generator.generator_seed is 1 in the run, 2 now.")):
        run(tmp_path, attrfx.gradient_shap, _runs_data.batches(), generator=torch.Generator().manual_seed(2),
            resume=True, **kwargs)
