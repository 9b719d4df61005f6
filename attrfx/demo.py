"""The main job: train a small CNN on real handwritten digits, then explain it.

Run with ``bash run.sh demo`` (or ``python -m attrfx.demo``). It trains a CNN
on the 8×8 digits bundled with scikit-learn (nothing is downloaded), prints
its test accuracy, explains six test images with six attrfx methods, prints
each method's time and completeness gap (the sum of the attributions against
the exact value it should equal), and saves ``demo-output/attributions.png``.

The notebooks reuse :func:`trained_digits_cnn`.
"""

from __future__ import annotations

import argparse
import contextlib
import pathlib
import time
from collections import OrderedDict
from typing import Callable, Iterator, NamedTuple, Optional

import torch
from torch import Tensor, nn

import attrfx
from attrfx import axioms


def load_digits() -> tuple[Tensor, Tensor]:
    """The 1,797 8×8 handwritten digits bundled with scikit-learn: images ``[N, 1, 8, 8]`` in [0, 1], labels."""
    from sklearn.datasets import load_digits as sklearn_digits

    data = sklearn_digits()
    images = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    return images, torch.tensor(data.target)


def digits_cnn() -> nn.Sequential:
    """``conv1 → relu1 → conv2 → relu2 → pool → flatten → fc1 → relu3 → fc2`` (10 logits), named layers."""
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(1, 16, 3, padding=1)), ("relu1", nn.ReLU()),
        ("conv2", nn.Conv2d(16, 32, 3, padding=1)), ("relu2", nn.ReLU()), ("pool", nn.MaxPool2d(2)),
        ("flatten", nn.Flatten()), ("fc1", nn.Linear(32 * 4 * 4, 64)), ("relu3", nn.ReLU()),
        ("fc2", nn.Linear(64, 10)),
    ]))


@contextlib.contextmanager
def threads(n: int) -> Iterator[None]:
    """Run with ``n`` intra-op threads, then restore (a tiny model runs fastest on one thread)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train(model: nn.Module, images: Tensor, labels: Tensor, epochs: int, seed: int) -> None:
    """Adam on cross-entropy, minibatches of 64 drawn from a generator seeded with ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(epochs):
        for rows in torch.randperm(len(images), generator=generator).split(64):
            optimiser.zero_grad()
            nn.functional.cross_entropy(model(images[rows]), labels[rows]).backward()
            optimiser.step()
    model.eval()


class Trained(NamedTuple):
    """A trained digits CNN, its held-out test set, its test accuracy and the training time."""

    model: nn.Sequential
    test_images: Tensor
    test_labels: Tensor
    accuracy: float
    seconds: float


def trained_digits_cnn(*, epochs: int = 8, seed: int = 0, n_train: int = 1400) -> Trained:
    """Train :func:`digits_cnn` on ``n_train`` digits (a few seconds on one CPU core); test on the rest.

    Everything is seeded (split, initialisation, minibatches); the global RNG is left as it was.
    """
    images, labels = load_digits()
    split = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    train_rows, test_rows = split[:n_train], split[n_train:]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = digits_cnn()
    start = time.perf_counter()
    with threads(1):
        train(model, images[train_rows], labels[train_rows], epochs, seed)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        accuracy = (model(images[test_rows]).argmax(1) == labels[test_rows]).float().mean().item()
    return Trained(model, images[test_rows], labels[test_rows], accuracy, seconds)


def one_per_class(labels: Tensor, count: int) -> Tensor:
    """Indices of the first example of each of the first ``count`` distinct labels (in order of appearance)."""
    seen: dict[int, int] = {}
    for i, label in enumerate(labels.tolist()):
        seen.setdefault(label, i)
        if len(seen) == count:
            break
    return torch.tensor(list(seen.values()))


def most_active_channel(model: nn.Module, layer: str, images: Tensor) -> int:
    """The channel of ``layer`` with the largest mean activation over ``images``."""
    with torch.no_grad():
        (activation,) = attrfx.probe.forward_to_layer(model, model.get_submodule(layer), (images,))
    return int(activation.mean((0, 2, 3)).argmax())


class Explanation(NamedTuple):
    """One method's attributions, its time, and what their sum should equal (None: no such law)."""

    label: str
    attributions: Tensor
    milliseconds: float
    law: str
    reference: Optional[Tensor]
    exact: bool


def explain(model: nn.Module, x: Tensor, target: list[int], layer: str, channel: int,
            n_steps: int = 50) -> list[Explanation]:
    """Run the six methods of the demo on ``x``, timing each, with the reference of each completeness law."""
    neuron = (channel, slice(None), slice(None))  # the sum of one channel's feature map
    n_value = axioms.neuron_difference(model, layer, x, neuron)
    f_value = axioms.output_difference(model, x, target=target)
    runs: list[tuple[str, Callable[[], Tensor], str, Optional[Tensor], bool]] = [
        (f"layer_gradcam\n{layer} → true logit",
         lambda: attrfx.layer_gradcam(model, layer, x, target=target, relu_attributions=True),
         "(no completeness law)", None, False),
        (f"layer_conductance\n{layer} → true logit\n(channels summed)",
         lambda: attrfx.layer_conductance(model, layer, x, target=target, n_steps=n_steps,
                                          method="riemann_trapezoid"),
         "F(x) − F(0), F = true-class logit", f_value, False),
        (f"neuron_conductance\ntrue logit through\nchannel {channel} of {layer}",
         lambda: attrfx.neuron_conductance(model, layer, x, neuron, target=target, n_steps=n_steps),
         "(a summed channel: no completeness law)", None, False),
        (f"neuron_integrated_gradients\nchannel {channel} of {layer}",
         lambda: attrfx.neuron_integrated_gradients(model, layer, x, neuron, n_steps=n_steps),
         f"n(x) − n(0), n = Σ {layer}[{channel}]", n_value, False),
        (f"neuron_deeplift\nchannel {channel} of {layer}",
         lambda: attrfx.neuron_deeplift(model, layer, x, neuron),
         f"n(x) − n(0), n = Σ {layer}[{channel}]", n_value, True),
        (f"neuron_guided_backprop\nchannel {channel} of {layer}",
         lambda: attrfx.neuron_guided_backprop(model, layer, x, neuron),
         "(no completeness law)", None, False),
    ]
    results = []
    for label, run, law, reference, exact in runs:
        start = time.perf_counter()
        attributions = run()
        results.append(Explanation(label, attributions, 1e3 * (time.perf_counter() - start), law, reference, exact))
    return results


def completeness_table(results: list[Explanation]) -> str:
    """Method, time, the law its sum obeys, the reference values, and the largest relative gap."""
    lines = [f"{'method':32s} {'time [ms]':>9s}  {'Σ attributions should equal':50s} "
             f"{'reference (exact), per image':44s} {'max rel. gap':>12s}"]
    for r in results:
        name = r.label.split("\n")[0]
        if r.reference is None:
            lines.append(f"{name:32s} {r.milliseconds:9.1f}  {r.law or '(no completeness law)'}")
            continue
        gap = axioms.completeness_gap(r.attributions, r.reference, relative=True).abs().max().item()
        values = " ".join(f"{v:6.2f}" for v in r.reference.tolist())
        law = r.law + ("" if r.exact else " (quadrature)")
        lines.append(f"{name:32s} {r.milliseconds:9.1f}  {law:50s} {values:44s} {gap:12.1e}")
    return "\n".join(lines)


def save_figure(x: Tensor, titles: list[str], results: list[Explanation], path: pathlib.Path) -> None:
    """The images with each method's attributions overlaid (layer maps upsampled), titled, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from attrfx import viz

    rows = {r.label: r.attributions for r in results}
    fig = viz.grid(x, rows, column_titles=titles, panel=1.45, mode="bilinear",
                   title="What made the digits CNN see each digit?  attrfx on scikit-learn's 8×8 handwritten digits\n"
                         "red: raises the explained value, blue: lowers it (baseline: a black image)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--images", type=int, default=6, help="how many test images to explain")
    parser.add_argument("--layer", default="relu2", help="the hidden layer to attribute at")
    parser.add_argument("--n-steps", type=int, default=50)
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("demo-output"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    trained = trained_digits_cnn(epochs=args.epochs, seed=args.seed)
    model = trained.model
    print(f"digits CNN: test accuracy {trained.accuracy:.3f} on {len(trained.test_labels)} held-out images "
          f"({trained.seconds:.1f}s of training, {args.epochs} epochs)")

    rows = one_per_class(trained.test_labels, args.images)
    x, y = trained.test_images[rows], trained.test_labels[rows]
    with torch.no_grad():
        probabilities = model(x).softmax(1)
    titles = [f"label {int(t)}\npredicted {int(p.argmax())} ({p.max():.0%})" for t, p in zip(y, probabilities)]
    channel = most_active_channel(model, args.layer, trained.test_images)
    print(f"most active channel of {args.layer} on the test set: {channel}; explaining the true-class logit "
          f"of {len(rows)} test images (digits {y.tolist()}), baseline: a black image\n")

    with threads(1):
        results = explain(model, x, y.tolist(), args.layer, channel, n_steps=args.n_steps)
    print(completeness_table(results))
    print("\nreference: computed exactly by running the model on the image and on the black baseline; "
          "relative gap: max over the images of |Σ attributions − reference| / |reference|.\n"
          f"(quadrature): a path integral with {args.n_steps} steps, so the gap is quadrature error and shrinks "
          "as n_steps grows; DeepLift on a ReLU network sums to the reference exactly.")

    path = args.out / "attributions.png"
    save_figure(x, titles, results, path)
    print(f"\nsaved {path}")


if __name__ == "__main__":
    main()
