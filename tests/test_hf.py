"""attrfx on real ``transformers`` model classes, built here from tiny configs (no download, no network).

Their outputs are ``ModelOutput``s, explained with a callable target. Each result is compared with the same
quantity by hand (forward hooks and ``torch.autograd.grad``) and with Captum 0.9.0, whose oracle needs a tensor
output: it gets the model wrapped to return the explained logits. Every call leaves the model and the inputs as
they were.
"""

import pytest
import torch
from captum.attr import LayerConductance, LayerGradCam, LayerGradientXActivation, NeuronGradient, \
    NeuronIntegratedGradients
from torch import nn
from transformers import BertConfig, BertForSequenceClassification, GPT2Config, GPT2LMHeadModel

import attrfx
from attrfx import axioms
from parity import assert_parity

N, LENGTH, VOCAB, TOKEN = 3, 6, 50, 7


@pytest.fixture(scope="module")
def bert():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        config = BertConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=32, max_position_embeddings=16, num_labels=3)
        return BertForSequenceClassification(config).double().eval()


@pytest.fixture(scope="module")
def gpt2():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        config = GPT2Config(vocab_size=VOCAB, n_embd=16, n_layer=2, n_head=2, n_positions=16, bos_token_id=0,
                            eos_token_id=0, use_cache=False)
        return GPT2LMHeadModel(config).double().eval()


# the explained value per model: a class logit for BERT, the next token's logit at the last position for GPT-2
EXPLAINED = {"bert": lambda out: out.logits[:, 1], "gpt2": lambda out: out.logits[:, -1, TOKEN]}
EMBEDDINGS = {"bert": "bert.embeddings.word_embeddings", "gpt2": "transformer.wte"}
BLOCKS = {"bert": "bert.encoder.layer.1.output", "gpt2": "transformer.h.1.mlp"}
FEED_FORWARD = {"bert": "bert.encoder.layer.0.intermediate", "gpt2": "transformer.h.0.mlp.c_fc"}


@pytest.fixture
def models(bert, gpt2):
    return {"bert": bert, "gpt2": gpt2}


def token_ids():
    return torch.randint(0, VOCAB, (N, LENGTH), generator=torch.Generator().manual_seed(1))


def embedded():
    return torch.randn(N, LENGTH, 16, generator=torch.Generator().manual_seed(2), dtype=torch.float64)


class FromEmbeddings(nn.Module):
    """The model called with ``inputs_embeds`` (float inputs, for the methods that differentiate the inputs)."""

    def __init__(self, hf):
        super().__init__()
        self.hf = hf

    def forward(self, embeds):
        return self.hf(inputs_embeds=embeds)


def stateless(call, model, inputs):
    """``call()``, checking that it leaves ``model`` (hooks, parameters, modes) and ``inputs`` as they were."""
    before = axioms.state_of(model, inputs)
    result = call()
    assert axioms.state_changes(before, axioms.state_of(model, inputs)) == []
    return result


def by_hand(module, run, value):
    """``(h, ∂F/∂h)`` at ``module``'s output: a forward hook keeps ``h``, ``torch.autograd.grad`` differentiates
    ``F = value(run())`` summed over examples (examples are independent)."""
    seen = []
    handle = module.register_forward_hook(lambda m, i, o: seen.append(o))
    try:
        out = run()
        (grad,) = torch.autograd.grad(value(out).sum(), seen[0])
    finally:
        handle.remove()
    return seen[0].detach(), grad


@pytest.mark.parametrize("name", ["bert", "gpt2"])
def test_gradient_x_activation_at_the_embedding_of_token_ids(models, name):
    model, ids, explain = models[name], token_ids(), EXPLAINED[name]
    layer = model.get_submodule(EMBEDDINGS[name])
    got = stateless(lambda: attrfx.layer_gradient_x_activation(model, EMBEDDINGS[name], ids, target=explain),
                    model, ids)
    h, g = by_hand(layer, lambda: model(ids), explain)
    torch.testing.assert_close(got, h * g)
    assert_parity(got, LayerGradientXActivation(lambda t: explain(model(t)), layer).attribute(ids))


@pytest.mark.parametrize("name", ["bert", "gpt2"])
def test_gradcam_at_a_block_of_token_ids(models, name):
    model, ids, explain = models[name], token_ids(), EXPLAINED[name]
    layer = model.get_submodule(BLOCKS[name])
    got = stateless(lambda: attrfx.layer_gradcam(model, BLOCKS[name], ids, target=explain), model, ids)
    h, g = by_hand(layer, lambda: model(ids), explain)
    torch.testing.assert_close(got, (g.mean(2, keepdim=True) * h).sum(1, keepdim=True))
    assert_parity(got, LayerGradCam(lambda t: explain(model(t)), layer).attribute(ids))


@pytest.mark.parametrize("name", ["bert", "gpt2"])
def test_conductance_of_a_block_from_input_embeddings(models, name):
    model, explain = FromEmbeddings(models[name]), EXPLAINED[name]
    embeds, layer_name, steps = embedded(), "hf." + BLOCKS[name], 4
    layer = model.get_submodule(layer_name)
    got = stateless(lambda: attrfx.layer_conductance(model, layer_name, embeds, target=explain, n_steps=steps,
                                                     method="riemann_trapezoid"), model, embeds)
    # Σₛ ∂F/∂h(αₛ)·(h(αₛ₊₁) − h(αₛ)) on the nodes 0, 1/steps, ..., 1 of the straight path from zero embeddings
    at = [by_hand(layer, lambda: model(a * embeds), explain) for a in torch.linspace(0, 1, steps + 1).tolist()]
    torch.testing.assert_close(got, sum(g * (h_next - h) for (h, g), (h_next, _) in zip(at, at[1:])))
    theirs = LayerConductance(lambda e: explain(model(e)), layer).attribute(embeds, n_steps=steps)
    assert_parity(attrfx.layer_conductance(model, layer_name, embeds, target=explain, n_steps=steps), theirs)


@pytest.mark.parametrize("name", ["bert", "gpt2"])
def test_neuron_gradient_at_a_feed_forward_neuron(models, name):
    model, explain = FromEmbeddings(models[name]), EXPLAINED[name]
    embeds, layer_name = embedded(), "hf." + FEED_FORWARD[name]
    layer = model.get_submodule(layer_name)
    got = stateless(lambda: attrfx.neuron_gradient(model, layer_name, embeds, (LENGTH - 1, 5)), model, embeds)
    seen = []
    handle = layer.register_forward_hook(lambda m, i, o: seen.append(o))
    try:
        x = embeds.clone().requires_grad_()
        model(x)
        (expected,) = torch.autograd.grad(seen[0][:, LENGTH - 1, 5].sum(), x)
    finally:
        handle.remove()
    torch.testing.assert_close(got, expected)
    assert_parity(got, NeuronGradient(lambda e: explain(model(e)), layer).attribute(embeds, (LENGTH - 1, 5)))


def test_neuron_integrated_gradients_at_a_feed_forward_neuron_per_example(models):
    """A per-example selector (each example's own position), repeated for the path points as Captum needs too."""
    model = FromEmbeddings(models["gpt2"])
    embeds, layer_name = embedded(), "hf." + FEED_FORWARD["gpt2"]
    positions = torch.tensor([LENGTH - 1, 2, 0])

    def own_position(h):
        return h[torch.arange(len(h)), positions.repeat(len(h) // N), 4]

    got = stateless(lambda: attrfx.neuron_integrated_gradients(model, layer_name, embeds, own_position, n_steps=5),
                    model, embeds)
    theirs = NeuronIntegratedGradients(lambda e: EXPLAINED["gpt2"](model(e)), model.get_submodule(layer_name))
    assert_parity(got, theirs.attribute(embeds, own_position, n_steps=5))


@pytest.mark.parametrize("name,kind", [("bert", "SequenceClassifierOutput"),
                                       ("gpt2", "CausalLMOutputWithCrossAttentions")])
def test_an_index_target_on_a_model_output_shows_the_callable_to_write(models, name, kind):
    model, ids = models[name], token_ids()
    call = lambda: attrfx.layer_gradient_x_activation(model, EMBEDDINGS[name], ids, target=1)  # noqa: E731
    with pytest.raises(attrfx.AttrfxValueError) as info:
        call()
    assert axioms.statelessness_violations(call, model, ids) == []
    assert str(info.value) == (f"layer_gradient_x_activation: `target` must be a callable, since the model returns "
                               f"{kind} (a ModelOutput), not a tensor to index: pass target=lambda out: "
                               f"out.logits[:, ...] giving one value per example; got 1.")
