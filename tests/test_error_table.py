"""The README's error table is true: every row's example message is what the matching call raises.

The rows of the table under "## Errors" are parsed from README.md. ``CALLS``
maps each row's situation (first column) to a call that must raise the row's
example message (second column: ``[...]`` and ``...`` stand for any text) as
an ``AttrfxValueError`` or ``AttrfxTypeError``; the fix (third column) must be
given. A row without a call here fails, so the table and this file change
together. Between them the rows must cover both error classes.
"""

import pathlib
import re
import tempfile

import pytest
import torch

import attrfx
from models import ConvNet, MLP, MultiInput, Reused, randn, seeded

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def table_rows():
    """``(situation, message, fix)`` for each row of the table in the README's "## Errors" section."""
    text = README.read_text()
    section = text.split("\n## Errors", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")] if line.startswith("|") else []
        if len(cells) != 3 or cells[0] in ("situation", "") or set(cells[0]) <= set("-: "):
            continue
        message = re.fullmatch(r"``(.*)``", cells[1])
        assert message, f"row {cells[0]!r}: the example message must be one ``code span``"
        rows.append((cells[0], message.group(1), cells[2]))
    return rows


def pattern(example):
    """The example message as a regex: ``[...]`` and ``...`` stand for any text."""
    parts = re.split(r"(\[\.\.\.\]|\.\.\.)", example)
    return "".join({"[...]": r"\[.*\]", "...": ".*"}.get(p, re.escape(p)) for p in parts)


def conv_x():
    return randn(2, 2, 8, 8)


V, T = attrfx.AttrfxValueError, attrfx.AttrfxTypeError


class _DictOutput(torch.nn.Module):
    """A model whose output is a dict of logits."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 3).double()

    def forward(self, x):
        return {"logits": self.fc(x)}

CALLS = {
    "selector with the wrong number of indices":
        (V, lambda: attrfx.neuron_gradient(seeded(ConvNet), "conv1", conv_x(), (1, 2))),
    "callable selector returning the wrong shape":
        (V, lambda: attrfx.neuron_gradient(seeded(MLP), "fc2", randn(4, 5), lambda h: h[:, :2])),
    "baselines of the wrong shape":
        (V, lambda: attrfx.neuron_conductance(seeded(ConvNet), "conv1", conv_x(), (0, 1, 1), target=0,
                                              baselines=torch.zeros(2, 2, 8, dtype=torch.float64))),
    "unknown quadrature":
        (V, lambda: attrfx.neuron_integrated_gradients(seeded(MLP), "fc2", randn(4, 5), 1, method="simpson")),
    "too few steps":
        (V, lambda: attrfx.neuron_conductance(seeded(MLP), "fc2", randn(4, 5), 1, target=0, n_steps=1)),
    "layer not in the model":
        (V, lambda: attrfx.layer_conductance(seeded(ConvNet), "conv9", conv_x(), target=0)),
    "layer run twice":
        (V, lambda: attrfx.layer_gradcam(seeded(Reused), "act", randn(2, 3), target=0)),
    "target out of range":
        (V, lambda: attrfx.layer_conductance(seeded(ConvNet), "conv2", conv_x(), target=[1, 7])),
    "target missing":
        (V, lambda: attrfx.layer_gradient_x_activation(seeded(MLP), "fc2", randn(4, 5))),
    "mismatched tuple lengths":
        (V, lambda: attrfx.neuron_conductance(seeded(MultiInput), "act", (randn(2, 4), randn(2, 3)), 1, target=0,
                                              baselines=(0.0,))),
    "integer inputs for input gradients":
        (V, lambda: attrfx.neuron_gradient(seeded(MLP), "fc2", torch.ones(2, 5, dtype=torch.long), 1)),
    "argument of the wrong type":
        (T, lambda: attrfx.neuron_integrated_gradients(seeded(MLP), "fc2", randn(4, 5), 1, n_steps=2.5)),
    "flag that is not a bool":
        (T, lambda: attrfx.layer_conductance(seeded(MLP), "fc2", randn(4, 5), target=0,
                                             return_convergence_delta="yes")),
    "index target on a structured output":
        (V, lambda: attrfx.layer_gradient_x_activation(_DictOutput().eval(), "fc", randn(2, 4), target=1)),
    "callable selector that does not follow stacked rows":
        (V, lambda: attrfx.neuron_integrated_gradients(
            torch.nn.Sequential(torch.nn.Linear(4, 7), torch.nn.ReLU()).double().eval(), "1", randn(2, 4),
            lambda h: h[torch.arange(2), torch.tensor([1, 2])], n_steps=14)),
    "LRP on a module type without a rule":
        (T, lambda: attrfx.lrp(torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                                   torch.nn.Linear(3, 2)).double().eval(), randn(2, 4), target=1)),
    "integer inputs for integrated gradients":
        (V, lambda: attrfx.integrated_gradients(_tokens(), torch.ones(2, 4, dtype=torch.long), target=0)),
    "unknown noise tunnel type":
        (V, lambda: attrfx.noise_tunnel(attrfx.saliency, seeded(MLP), randn(2, 5), target=1, nt_type="smooth")),
    "model that is not a model":
        (T, lambda: attrfx.layer_conductance("net", "fc2", randn(4, 5), target=0)),
    "integer inputs for a path method":
        (V, lambda: attrfx.layer_conductance(_tokens(), "0", torch.ones(2, 4, dtype=torch.long), target=0)),
    "layer input that is not floating-point":
        (V, lambda: attrfx.layer_gradient_x_activation(torch.nn.Sequential(torch.nn.Embedding(9, 3)), "0",
                                                       torch.ones(2, 4, dtype=torch.long), target=(0, 0),
                                                       attribute_to_layer_input=True)),
    "rule-based method on a plain function":
        (T, lambda: attrfx.neuron_deeplift(lambda x: seeded(MLP)(x), seeded(MLP).fc2, randn(4, 5), 1)),
    "baselines on a device they cannot be copied from":
        (V, lambda: attrfx.neuron_integrated_gradients(seeded(MLP), "fc2", randn(4, 5), 1,
                                                       baselines=torch.zeros(1, 5, device="meta"))),
    "model with a compiled submodule":
        (V, lambda: attrfx.layer_gradcam(_compiled_inside(), "fc2", randn(4, 5), target=0)),
    "dataset batch of the wrong structure":
        (V, lambda: attrfx.attribute_dataset(attrfx.saliency, seeded(MLP), [randn(4, 5), {"x": randn(4, 5)}],
                                             out=_scratch() / "run", target=0)),
    "output directory holding another run":
        (V, lambda: attrfx.attribute_dataset(attrfx.saliency, seeded(MLP), [randn(4, 5)], out=_held_run(), target=1)),
    "resuming with other settings":
        (V, lambda: attrfx.attribute_dataset(attrfx.saliency, seeded(MLP), [randn(4, 5)], out=_held_run(), target=1,
                                             resume=True)),
    "dataset method without its required baselines":
        (V, lambda: attrfx.attribute_dataset(attrfx.gradient_shap, seeded(MLP), [randn(4, 5)], out=_scratch() / "run",
                                             target=0)),
    "loading an incomplete run":
        (V, lambda: attrfx.load_run(_held_run(complete=False))),
    "occlusion window larger than the input":
        (V, lambda: attrfx.occlusion(seeded(ConvNet), randn(2, 2, 8, 8), (1, 9, 2), target=0)),
    "occlusion stride below 1":
        (V, lambda: attrfx.occlusion(seeded(ConvNet), randn(2, 2, 8, 8), (1, 2, 2), strides=(1, 0, 2), target=0)),
    "occlusion stride that skips elements":
        (V, lambda: attrfx.occlusion(seeded(ConvNet), randn(2, 2, 8, 8), (1, 2, 2), strides=3, target=0)),
    "feature mask of the wrong shape":
        (V, lambda: attrfx.feature_ablation(seeded(MLP), randn(2, 5), target=0, feature_mask=torch.zeros(1, 4, dtype=torch.long))),
    "feature mask of floats":
        (V, lambda: attrfx.feature_ablation(seeded(MLP), randn(2, 5), target=0, feature_mask=torch.zeros(1, 5))),
    "permutation of one example":
        (V, lambda: attrfx.feature_permutation(seeded(MLP), randn(1, 5), target=0)),
    "model that does not return a row per example":
        (V, lambda: attrfx.feature_ablation(lambda x: seeded(MLP)(x)[:2], randn(2, 5), target=0)),
    "too few samples":
        (V, lambda: attrfx.shapley_value_sampling(seeded(MLP), randn(2, 5), target=0, n_samples=0)),
    "surrogate feature ids not numbered from 0":
        (V, lambda: attrfx.kernel_shap(seeded(MLP), randn(2, 5), target=0, feature_mask=torch.tensor([[1, 1, 2, 3, 3]]))),
    "too many groups for exact Shapley values":
        (V, lambda: attrfx.shapley_values(lambda x: x.sum(1), torch.ones(1, 30))),
    "LIME perturb_func of the wrong size":
        (V, lambda: attrfx.lime(seeded(MLP), randn(2, 5), target=0, perturb_func=lambda inputs, **kw: torch.ones(1, 3))),
}


_SCRATCH = tempfile.TemporaryDirectory(prefix="attrfx-error-table-")  # removed when the interpreter exits


def _scratch():
    return pathlib.Path(tempfile.mkdtemp(dir=_SCRATCH.name))


def _held_run(complete=True):
    """A directory holding a run of saliency (target 0) of the MLP over one batch, complete or interrupted."""
    out = _scratch() / "run"
    attrfx.attribute_dataset(attrfx.saliency, seeded(MLP), [randn(4, 5)], out=out, target=0, show_progress=False)
    if not complete:
        (out / "complete.json").unlink()
        (out / "commits" / "000000.json").unlink()
    return out


def _tokens():
    return seeded(lambda: torch.nn.Sequential(torch.nn.Embedding(9, 3), torch.nn.Flatten(), torch.nn.Linear(12, 2)))


def _compiled_inside():
    model = seeded(MLP)
    model.fc1 = torch.compile(model.fc1, backend="eager")
    return model


def check(situation, message):
    error, call = CALLS[situation]
    with pytest.raises((attrfx.AttrfxValueError, attrfx.AttrfxTypeError)) as info:
        call()
    assert type(info.value) is error, f"{situation}: raised {type(info.value).__name__}, not {error.__name__}"
    assert re.fullmatch(pattern(message), str(info.value)), \
        f"{situation}: the README says\n  {message}\nthe call raises\n  {info.value}"


README_ROWS = table_rows()


def test_the_readme_has_an_error_table():
    assert len(README_ROWS) >= 11


@pytest.mark.parametrize("situation,message,fix", README_ROWS, ids=[r[0] for r in README_ROWS])
def test_readme_row(situation, message, fix):
    assert situation in CALLS, f"no call for the README row {situation!r}: add one to CALLS"
    assert fix, f"row {situation!r} gives no fix"
    check(situation, message)


def test_every_call_has_a_row_and_both_error_classes_have_rows():
    rows = {r[0] for r in README_ROWS}
    assert set(CALLS) == rows, "a call without a README row"
    assert {CALLS[s][0] for s in rows} == {attrfx.AttrfxValueError, attrfx.AttrfxTypeError}


def test_pattern_elides_only_the_marked_parts():
    assert re.fullmatch(pattern("a [...] b ...; c."), "a [1, 2] b xyz; c.")
    assert not re.fullmatch(pattern("a [...] b."), "a [1] c.")
