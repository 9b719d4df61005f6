"""The main job: train a small CNN on real handwritten digits, then explain it.

Run with ``bash run.sh demo`` (or ``python -m attrfx.demo``). It prints the
test accuracy and the completeness gap of each path method, and saves
``demo-output/attributions.png``.
"""

from __future__ import annotations

import argparse
import pathlib
import time

import torch
from torch import nn

import attrfx


def load_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """The 1,797 8×8 handwritten digits bundled with scikit-learn, scaled to [0, 1]."""
    from sklearn.datasets import load_digits as sklearn_digits

    data = sklearn_digits()
    images = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    return images, torch.tensor(data.target)


def digits_cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10),
    )


def train(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, epochs: int, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(epochs):
        for rows in torch.randperm(len(images), generator=generator).split(64):
            optimiser.zero_grad()
            nn.functional.cross_entropy(model(images[rows]), labels[rows]).backward()
            optimiser.step()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("demo-output"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    images, labels = load_digits()
    split = torch.randperm(len(images), generator=torch.Generator().manual_seed(args.seed))
    train_rows, test_rows = split[:1400], split[1400:]
    model = digits_cnn()
    start = time.perf_counter()
    train(model, images[train_rows], labels[train_rows], args.epochs, args.seed)
    model.eval()
    with torch.no_grad():
        accuracy = (model(images[test_rows]).argmax(1) == labels[test_rows]).float().mean().item()
    print(f"digits CNN: test accuracy {accuracy:.3f} after {time.perf_counter() - start:.1f}s of training")

    x, y = images[test_rows[:6]], labels[test_rows[:6]]
    target = y.tolist()
    with torch.no_grad():
        channel = int(model[2](model[1](model[0](x))).mean((0, 2, 3)).argmax())
    runs = {
        "layer_gradcam (conv2)": lambda: attrfx.interpolate(
            attrfx.layer_gradcam(model, "3", x, target=target, relu_attributions=True), (8, 8), "bilinear"),
        "neuron_integrated_gradients (conv2 ch%d)" % channel: lambda: attrfx.neuron_integrated_gradients(
            model, "3", x, (channel, slice(None), slice(None))),
        "neuron_conductance (conv2 ch%d)" % channel: lambda: attrfx.neuron_conductance(
            model, "3", x, (channel, slice(None), slice(None)), target=target, method="gausslegendre"),
        "layer_conductance (conv2)": lambda: attrfx.layer_conductance(
            model, "3", x, target=target, method="riemann_trapezoid", return_convergence_delta=True),
    }
    results = {}
    print(f"\n{'method':45s} {'time [ms]':>10s} {'max |completeness gap|':>24s}")
    for name, run in runs.items():
        start = time.perf_counter()
        out = run()
        elapsed = 1e3 * (time.perf_counter() - start)
        gap = "-"
        if name.startswith("layer_conductance"):
            out, delta = out
            gap = f"{delta.abs().max().item():.2e}"
        elif name.startswith("neuron_integrated"):
            with torch.no_grad():
                value = model[3](model[2](model[1](model[0](x))))[:, channel].sum((1, 2))
                base = model[3](model[2](model[1](model[0](torch.zeros_like(x)))))[:, channel].sum((1, 2))
            gap = f"{(out.sum((1, 2, 3)) - (value - base)).abs().max().item():.2e}"
        results[name] = out
        print(f"{name:45s} {elapsed:10.1f} {gap:>24s}")

    save_figure(x, target, results, args.out / "attributions.png")


def save_figure(x: torch.Tensor, target: list[int], results: dict, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [("input", x)] + [(name, r.sum(1, keepdim=True) if r.shape[1] > 1 else r) for name, r in results.items()
                             if r.shape[-2:] == x.shape[-2:]]
    fig, axes = plt.subplots(len(rows), len(target), figsize=(1.6 * len(target), 1.7 * len(rows)))
    for r, (name, maps) in enumerate(rows):
        for c in range(len(target)):
            ax = axes[r, c]
            image = maps[c, 0].detach()
            limit = image.abs().max().item() or 1.0
            ax.imshow(image, cmap="gray" if r == 0 else "bwr", vmin=0 if r == 0 else -limit, vmax=1 if r == 0 else limit)
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title(f"digit {target[c]}", fontsize=8)
            if c == 0:
                ax.set_ylabel(name.split(" ")[0].replace("_", "\n"), fontsize=6)
    fig.suptitle("attrfx on scikit-learn digits (red: positive, blue: negative)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"\nsaved {path}")


if __name__ == "__main__":
    main()
