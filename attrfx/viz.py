"""Pictures of attributions: heatmaps, overlays on images, layer maps, coloured tokens.

Everything here is for looking at results; nothing feeds back into the
methods. matplotlib is optional (``pip install 'attrfx[viz]'``) and imported
only when a picture is drawn; :func:`normalize`, :func:`upsample` and
:func:`tokens_html` work without it.

Sign modes, as in Captum's ``visualization`` module:

- ``"all"``: signed values in ``[-1, 1]``, blue negative, red positive;
- ``"positive"``: only what pushed the explained value up (red);
- ``"negative"``: only what pushed it down, as a magnitude (blue);
- ``"absolute"``: the magnitude regardless of sign (purple).

Values are divided by a percentile of their magnitude (default the 99th),
so one extreme pixel does not wash the rest out, and clipped to the range.

Example:
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import matplotlib.pyplot as plt
    >>> image, attr = torch.rand(1, 8, 8), torch.randn(1, 8, 8)
    >>> ax = overlay(image, attr, sign="positive", title="what pushed the score up")
    >>> ax.get_title()
    'what pushed the score up'
    >>> plt.close("all")
"""

from __future__ import annotations

import html
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from ._errors import bad_type, bad_value
from .methods.gradient import interpolate

Array = Union[Tensor, np.ndarray]

SIGNS = ("all", "positive", "negative", "absolute")
# the colour each sign paints its largest values in (RGB in [0, 1]); zero is white
RED, BLUE, PURPLE = (0.85, 0.1, 0.1), (0.1, 0.3, 0.85), (0.45, 0.2, 0.65)
_FULL = {"positive": RED, "negative": BLUE, "absolute": PURPLE}


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("attrfx.viz draws with matplotlib, which is not installed: "
                          "pip install 'attrfx[viz]' (or pip install matplotlib).") from err
    return plt


def colormap(sign: str) -> Any:
    """The matplotlib colormap of a sign mode: white → red / blue / purple, or blue → white → red for ``"all"``.

    Example:
        >>> [round(float(c), 2) for c in colormap("all")(1.0)]
        [0.85, 0.1, 0.1, 1.0]
    """
    _check_sign(sign)
    _pyplot()
    from matplotlib.colors import LinearSegmentedColormap

    colours = [BLUE, (1.0, 1.0, 1.0), RED] if sign == "all" else [(1.0, 1.0, 1.0), _FULL[sign]]
    return LinearSegmentedColormap.from_list(f"attrfx_{sign}", colours)


def _numpy(value: Any, arg: str) -> np.ndarray:
    if isinstance(value, Tensor):
        return value.detach().cpu().to(torch.float64).numpy()
    if isinstance(value, np.ndarray):
        return value.astype(np.float64)
    raise bad_type(arg, "a torch.Tensor or a numpy array", value)


def _map2d(attribution: Array, arg: str = "attribution") -> np.ndarray:
    """``[H, W]``, ``[C, H, W]`` (channels summed) or ``[1, C, H, W]`` → ``[H, W]``."""
    a = _numpy(attribution, arg)
    if a.ndim == 4 and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 3:
        a = a.sum(0)
    if a.ndim != 2:
        raise bad_value(arg, "one map: [H, W], [C, H, W] (channels are summed) or [1, C, H, W]",
                        f"shape {tuple(a.shape)}")
    return a


def _image(image: Array) -> np.ndarray:
    """``[H, W]``, ``[1 or 3, H, W]`` or ``[H, W, 1 or 3]`` (optionally with a batch dim of 1) → ``[H, W(, 3)]`` in [0, 1]."""
    a = _numpy(image, "image")
    if a.ndim == 4 and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = np.moveaxis(a, 0, -1)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] != 3):
        raise bad_value("image", "a grey [H, W] or [1, H, W] image or a colour [3, H, W] / [H, W, 3] one",
                        f"shape {tuple(_numpy(image, 'image').shape)}")
    low, high = a.min(), a.max()
    return (a - low) / (high - low) if high > low else np.zeros_like(a)


def _check_sign(sign: str) -> None:
    if sign not in SIGNS:
        raise bad_value("sign", f"one of {list(SIGNS)}", repr(sign))


def normalize(attribution: Array, *, sign: str = "all", percentile: float = 99.0) -> np.ndarray:
    """Scale an attribution for display: ``[-1, 1]`` for ``sign="all"``, ``[0, 1]`` otherwise.

    ``v / q`` clipped to the range, ``q`` the ``percentile``-th percentile of
    ``|v|`` over the values the sign mode keeps (all zeros when ``q`` is 0).

    Args:
        attribution: a tensor or array of any shape.
        sign: ``"all"``, ``"positive"``, ``"negative"`` or ``"absolute"``.
        percentile: in ``(0, 100]``; 100 divides by the largest magnitude.

    Returns:
        A float numpy array of the same shape.

    Example:
        >>> normalize(torch.tensor([-2.0, 1.0, 4.0]), percentile=100).tolist()
        [-0.5, 0.25, 1.0]
        >>> normalize(torch.tensor([-2.0, 1.0, 4.0]), sign="negative", percentile=100).tolist()
        [1.0, 0.0, 0.0]
    """
    _check_sign(sign)
    if isinstance(percentile, bool) or not isinstance(percentile, (int, float)) or not 0 < percentile <= 100:
        raise bad_value("percentile", "a number in (0, 100]", percentile)
    a = _numpy(attribution, "attribution")
    if sign == "positive":
        a = np.maximum(a, 0.0)
    elif sign == "negative":
        a = np.maximum(-a, 0.0)
    elif sign == "absolute":
        a = np.abs(a)
    kept = np.abs(a)[np.abs(a) > 0]
    scale = float(np.percentile(kept, percentile)) if kept.size else 0.0
    if scale == 0.0:
        return np.zeros_like(a)
    return np.clip(a / scale, -1.0 if sign == "all" else 0.0, 1.0)


def upsample(layer_attribution: Tensor, size: Sequence[int], *, mode: str = "bilinear") -> Tensor:
    """A layer's map resized onto the input: channels summed, then :func:`attrfx.interpolate`.

    Args:
        layer_attribution: ``[N, C, h, w]`` (e.g. from ``layer_gradcam`` or ``layer_conductance``), or ``[C, h, w]``.
        size: the input's ``(H, W)``.
        mode: ``"bilinear"`` (smooth) or ``"nearest"`` (blocky, honest about the layer's resolution).

    Returns:
        ``[N, 1, H, W]`` (``[1, H, W]`` for a ``[C, h, w]`` map).

    Example:
        >>> upsample(torch.ones(2, 16, 4, 4), (8, 8)).shape
        torch.Size([2, 1, 8, 8])
    """
    if not isinstance(layer_attribution, Tensor):
        raise bad_type("layer_attribution", "a torch.Tensor [N, C, h, w] or [C, h, w]", layer_attribution)
    if layer_attribution.dim() not in (3, 4):
        raise bad_value("layer_attribution", "a tensor [N, C, h, w] or [C, h, w]",
                        f"shape {tuple(layer_attribution.shape)}")
    single = layer_attribution.dim() == 3
    maps = (layer_attribution[None] if single else layer_attribution).detach().sum(1, keepdim=True)
    out = interpolate(maps, tuple(int(s) for s in size), mode)
    return out[0] if single else out


def heatmap(attribution: Array, *, sign: str = "all", percentile: float = 99.0, ax: Any = None,
            title: Optional[str] = None, cmap: Optional[str] = None, colorbar: bool = False) -> Any:
    """Draw one attribution map on its own, normalised by :func:`normalize`.

    Args:
        attribution: ``[H, W]``, ``[C, H, W]`` (channels summed) or ``[1, C, H, W]``.
        sign: the sign mode (see the module docstring).
        percentile: the normalising percentile of the magnitudes.
        ax: a matplotlib Axes to draw into (a new figure when None).
        title: the Axes title.
        cmap: a matplotlib colormap or its name (default: :func:`colormap` of the sign mode).
        colorbar: add a colour bar of the normalised scale.

    Returns:
        The matplotlib Axes.

    Example:
        >>> import matplotlib.pyplot as plt
        >>> ax = heatmap(torch.randn(8, 8), sign="absolute", colorbar=True)
        >>> ax.images[0].get_array().shape
        (8, 8)
        >>> plt.close("all")
    """
    plt = _pyplot()
    values = normalize(_map2d(attribution), sign=sign, percentile=percentile)
    if ax is None:
        _, ax = plt.subplots(figsize=(3, 3))
    low = -1.0 if sign == "all" else 0.0
    shown = ax.imshow(values, cmap=cmap or colormap(sign), vmin=low, vmax=1.0, interpolation="nearest")
    if colorbar:
        ax.figure.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
    _finish(ax, title)
    return ax


def overlay(image: Array, attribution: Array, *, sign: str = "all", percentile: float = 99.0, alpha: float = 0.85,
            ax: Any = None, title: Optional[str] = None, cmap: Optional[str] = None) -> Any:
    """Draw an attribution over the image it explains.

    The image is drawn dimmed in grey (or in colour); the attribution's
    colour is painted over it with an opacity that grows with the normalised
    magnitude, so small attributions leave the image visible.

    Args:
        image: ``[H, W]``, ``[1 or 3, H, W]`` or ``[H, W, 3]`` (a leading batch dim of 1 is dropped).
        attribution: a map of the same ``H × W`` (see :func:`heatmap`); use
            :func:`layer_overlay` for a smaller layer map.
        sign, percentile, ax, title, cmap: as for :func:`heatmap`.
        alpha: the opacity of the largest attribution, in ``[0, 1]``.

    Returns:
        The matplotlib Axes.

    Example:
        >>> import matplotlib.pyplot as plt
        >>> ax = overlay(torch.rand(8, 8), torch.randn(1, 8, 8), sign="all", title="digit 3")
        >>> len(ax.images)
        2
        >>> plt.close("all")
    """
    plt = _pyplot()
    picture, values = _image(image), _map2d(attribution)
    if picture.shape[:2] != values.shape:
        raise bad_value("attribution", f"a map of the image's size {picture.shape[:2]} "
                        "(use layer_overlay or upsample for a layer's map)", f"shape {values.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise bad_value("alpha", "a number in [0, 1]", alpha)
    scaled = normalize(values, sign=sign, percentile=percentile)
    if ax is None:
        _, ax = plt.subplots(figsize=(3, 3))
    if picture.ndim == 2:  # light grey strokes on white, so both red and blue stand out
        ax.imshow(0.4 * picture, cmap="gray_r", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(0.35 + 0.5 * picture, interpolation="nearest")
    low = -1.0 if sign == "all" else 0.0
    rgba = plt.get_cmap(cmap or colormap(sign))((scaled - low) / (1.0 - low))
    rgba[..., 3] = alpha * np.abs(scaled)
    ax.imshow(rgba, interpolation="nearest")
    _finish(ax, title)
    return ax


def layer_overlay(image: Array, layer_attribution: Tensor, *, mode: str = "bilinear", **kwargs: Any) -> Any:
    """:func:`overlay` of a layer's map (``[C, h, w]`` or ``[1, C, h, w]``) upsampled onto the image.

    Example:
        >>> import matplotlib.pyplot as plt
        >>> ax = layer_overlay(torch.rand(1, 8, 8), torch.randn(16, 4, 4), sign="positive")
        >>> ax.images[1].get_array().shape[:2]
        (8, 8)
        >>> plt.close("all")
    """
    picture = _image(image)
    maps = layer_attribution[0] if isinstance(layer_attribution, Tensor) and layer_attribution.dim() == 4 \
        and layer_attribution.shape[0] == 1 else layer_attribution
    return overlay(image, upsample(maps, picture.shape[:2], mode=mode), **kwargs)


def grid(images: Tensor, rows: Mapping[str, Tensor], *, sign: str = "all", percentile: float = 99.0,
         column_titles: Optional[Sequence[str]] = None, title: Optional[str] = None, panel: float = 1.5,
         mode: str = "bilinear") -> Any:
    """A figure: the images on top, then one row of overlays per method.

    Layer maps smaller than the images are upsampled (:func:`upsample`);
    multi-channel maps are summed over channels. Each panel is normalised on
    its own; the colour bar shows that normalised scale.

    Args:
        images: ``[N, C, H, W]``.
        rows: method name → attribution ``[N, C', H', W']``.
        sign, percentile: as for :func:`heatmap`.
        column_titles: one per image (e.g. labels and predictions).
        title: the figure's title.
        panel: the size of one panel in inches.
        mode: interpolation for layer maps.

    Returns:
        The matplotlib Figure.

    Example:
        >>> import matplotlib.pyplot as plt
        >>> x = torch.rand(3, 1, 8, 8)
        >>> fig = grid(x, {"gradient": torch.randn(3, 1, 8, 8), "layer": torch.randn(3, 4, 4, 4)}, title="demo")
        >>> len(fig.axes)  # 3 × 3 panels and a colour bar
        10
        >>> plt.close(fig)
    """
    plt = _pyplot()
    _check_sign(sign)
    n, size = images.shape[0], tuple(images.shape[-2:])
    label_width, bar_width = 1.9, 0.9  # inches: method names on the left, the colour bar on the right
    width, height = label_width + panel * n + bar_width, panel * (len(rows) + 1) + (0.9 if title else 0.4)
    fig, axes = plt.subplots(len(rows) + 1, n, figsize=(width, height), squeeze=False)
    fig.subplots_adjust(left=label_width / width, right=1 - bar_width / width, bottom=0.15 / height,
                        top=1 - (0.9 if title else 0.4) / height, wspace=0.08, hspace=0.12)
    for c in range(n):
        axes[0, c].imshow(_image(images[c]), cmap="gray_r", interpolation="nearest")
        _finish(axes[0, c], column_titles[c] if column_titles else None)
    _row_label(axes[0, 0], "input")
    for r, (name, maps) in enumerate(rows.items(), start=1):
        maps = maps.detach()
        if tuple(maps.shape[-2:]) != size:
            maps = upsample(maps, size, mode=mode)
        for c in range(n):
            overlay(images[c], maps[c], sign=sign, percentile=percentile, ax=axes[r, c])
        _row_label(axes[r, 0], name)
    low = -1.0 if sign == "all" else 0.0
    mappable = plt.cm.ScalarMappable(cmap=colormap(sign), norm=plt.Normalize(low, 1.0))
    top = axes[1, -1].get_position() if len(rows) else axes[0, -1].get_position()
    bottom = axes[-1, -1].get_position()
    bar_axes = fig.add_axes((top.x1 + 0.15 / width, bottom.y0, 0.12 / width, top.y1 - bottom.y0))
    bar = fig.colorbar(mappable, cax=bar_axes)
    bar.set_label(f"attribution / {percentile:g}th percentile of |value|", fontsize=7)
    bar.ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=10, y=1 - 0.08 / height, va="top")
    return fig


def _row_label(ax: Any, text: str) -> None:
    ax.set_ylabel(text, rotation=0, ha="right", va="center", fontsize=8, labelpad=6)


def _finish(ax: Any, title: Optional[str]) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    if title is not None:
        ax.set_title(title, fontsize=9)


class TokenHTML(str):
    """An HTML string that notebooks display as HTML (``IPython.display.HTML`` also accepts it)."""

    def _repr_html_(self) -> str:
        return str(self)


def tokens_html(tokens: Sequence[str], scores: Array, *, sign: str = "all", percentile: float = 100.0,
                title: Optional[str] = None) -> TokenHTML:
    """Colour each token by its attribution: a ``<div>`` of ``<span>`` s, the score in each tooltip.

    ``sign="all"`` paints positive scores red and negative ones blue, with an
    intensity proportional to the normalised magnitude (:func:`normalize`).

    Args:
        tokens: the tokens, as strings (shown HTML-escaped).
        scores: one number per token (e.g. an attribution summed over the embedding dim).
        sign, percentile: as for :func:`normalize`.
        title: a caption shown before the tokens.

    Returns:
        A :class:`TokenHTML` (a ``str`` with ``_repr_html_``): display it in a notebook, or write it to a file.

    Example:
        >>> page = tokens_html(["the", "cat", "<sat>"], torch.tensor([0.1, 1.0, -0.5]))
        >>> "&lt;sat&gt;" in page and "rgba(217, 26, 26, 1.00)" in page
        True
    """
    values = normalize(_numpy(scores, "scores").reshape(-1), sign=sign, percentile=percentile)
    raw = _numpy(scores, "scores").reshape(-1)
    if len(tokens) != values.size:
        raise bad_value("scores", f"one score per token ({len(tokens)})", f"{values.size} scores")
    spans = []
    for token, value, score in zip(tokens, values, raw):
        colour = _FULL["negative" if (sign == "negative" or (sign == "all" and value < 0)) else
                       ("positive" if sign in ("all", "positive") else "absolute")]
        r, g, b = (int(round(255 * c)) for c in colour)
        spans.append(f'<span title="{score:.4g}" style="background-color: rgba({r}, {g}, {b}, {abs(value):.2f}); '
                     f'padding: 1px 3px; margin: 1px; border-radius: 3px; color: '
                     f'{"white" if abs(value) > 0.6 else "black"}">{html.escape(str(token))}</span>')
    caption = f'<div style="font-size: 90%; margin-bottom: 2px">{html.escape(title)}</div>' if title else ""
    return TokenHTML(f'<div style="line-height: 1.9; font-family: sans-serif">{caption}{" ".join(spans)}</div>')


def token_heatmap(tokens: Sequence[str], rows: Mapping[str, Array], *, sign: str = "all", percentile: float = 100.0,
                  ax: Any = None, title: Optional[str] = None) -> Any:
    """A static picture of per-token scores: one row per method (or sentence), tokens along the bottom.

    Each row is normalised on its own, and its raw values are written in the cells.

    Example:
        >>> import matplotlib.pyplot as plt
        >>> ax = token_heatmap(["a", "b"], {"x·grad": torch.tensor([1.0, -2.0])}, title="scores")
        >>> [t.get_text() for t in ax.get_xticklabels()]
        ['a', 'b']
        >>> plt.close("all")
    """
    plt = _pyplot()
    raw = np.stack([_numpy(v, "rows").reshape(-1) for v in rows.values()])
    if raw.shape[1] != len(tokens):
        raise bad_value("rows", f"one score per token ({len(tokens)}) in every row", f"rows of {raw.shape[1]}")
    scaled = np.stack([normalize(r, sign=sign, percentile=percentile) for r in raw])
    if ax is None:
        _, ax = plt.subplots(figsize=(0.75 * len(tokens) + 1.5, 0.45 * len(rows) + 0.9))
    ax.imshow(scaled, cmap=colormap(sign), vmin=-1.0 if sign == "all" else 0.0, vmax=1.0, aspect="auto")
    for (i, j), value in np.ndenumerate(raw):
        ax.text(j, i, f"{value:.2g}", ha="center", va="center", fontsize=7,
                color="white" if abs(scaled[i, j]) > 0.6 else "black")
    ax.set_xticks(range(len(tokens)), [str(t) for t in tokens], rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), list(rows), fontsize=8)
    if title is not None:
        ax.set_title(title, fontsize=9)
    return ax
