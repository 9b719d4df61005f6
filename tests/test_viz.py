"""attrfx.viz renders what it should: PNGs read back pixel by pixel, and the token HTML."""

import sys

import matplotlib
import numpy as np
import pytest
import torch

matplotlib.use("Agg")
import matplotlib.image as mpimg  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

from attrfx import AttrfxValueError, viz  # noqa: E402

PX = 80  # every single-panel picture is PX × PX pixels; the 8 × 8 maps become 10 × 10 pixel cells


def render(path, draw):
    """Draw into Axes that fill a PX × PX figure exactly, save a PNG, read it back as RGB in [0, 1]."""
    fig = plt.figure(figsize=(1, 1), dpi=PX)
    ax = fig.add_axes([0, 0, 1, 1])
    draw(ax)
    fig.savefig(path, dpi=PX)
    plt.close(fig)
    assert path.stat().st_size > 0
    pixels = mpimg.imread(path)
    assert pixels.shape[:2] == (PX, PX)
    return pixels[..., :3]


def cell(pixels, row, col):
    """The colour at the centre of cell (row, col) of an 8 × 8 map."""
    return pixels[row * PX // 8 + PX // 16, col * PX // 8 + PX // 16]


def is_red(rgb):
    return rgb[0] > 0.6 and rgb[1] < 0.35 and rgb[2] < 0.35


def is_blue(rgb):
    return rgb[2] > 0.6 and rgb[0] < 0.35 and rgb[1] < 0.35


def is_grey(rgb, tol=0.03):
    return np.ptp(rgb) < tol


@pytest.fixture
def two_blocks():
    """+1 in the top-left quadrant, −1 in the bottom-right one, 0 elsewhere."""
    attr = torch.zeros(1, 8, 8)
    attr[0, :4, :4] = 1.0
    attr[0, 4:, 4:] = -1.0
    return attr


def test_heatmap_all_signs_in_red_and_blue(tmp_path, two_blocks):
    pixels = render(tmp_path / "all.png", lambda ax: viz.heatmap(two_blocks, sign="all", ax=ax))
    assert is_red(cell(pixels, 1, 1)) and is_blue(cell(pixels, 6, 6))
    assert (cell(pixels, 1, 6) > 0.95).all()  # zero is white


@pytest.mark.parametrize("sign, coloured, blank", [("positive", (1, 1), (6, 6)), ("negative", (6, 6), (1, 1))])
def test_heatmap_one_sign_keeps_only_that_sign(tmp_path, two_blocks, sign, coloured, blank):
    pixels = render(tmp_path / f"{sign}.png", lambda ax: viz.heatmap(two_blocks, sign=sign, ax=ax))
    assert cell(pixels, *coloured).min() < 0.3  # a saturated colour
    assert (cell(pixels, *blank) > 0.9).all()  # the colormaps start near white


def test_heatmap_absolute_colours_both_signs_alike(tmp_path, two_blocks):
    pixels = render(tmp_path / "abs.png", lambda ax: viz.heatmap(two_blocks, sign="absolute", ax=ax))
    np.testing.assert_allclose(cell(pixels, 1, 1), cell(pixels, 6, 6), atol=0.02)
    assert cell(pixels, 1, 1).min() < 0.5 and (cell(pixels, 1, 6) > 0.95).all()


def test_overlay_colours_only_where_attribution_is_large(tmp_path, two_blocks):
    image = torch.linspace(0, 1, 64).reshape(1, 8, 8)
    pixels = render(tmp_path / "overlay.png", lambda ax: viz.overlay(image, two_blocks, sign="positive", alpha=1.0,
                                                                     ax=ax))
    assert is_red(cell(pixels, 2, 2))
    assert is_grey(cell(pixels, 6, 6)) and is_grey(cell(pixels, 1, 6))  # the image shows through
    assert cell(pixels, 1, 6)[0] > cell(pixels, 6, 1)[0]  # darker strokes where the image is brighter


def test_overlay_of_a_colour_image(tmp_path, two_blocks):
    image = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0))
    pixels = render(tmp_path / "rgb.png", lambda ax: viz.overlay(image, two_blocks, sign="all", alpha=1.0, ax=ax))
    assert is_red(cell(pixels, 1, 1)) and is_blue(cell(pixels, 6, 6))


def test_layer_map_is_upsampled_onto_the_image(tmp_path):
    layer = torch.zeros(16, 2, 2)
    layer[:, 0, 1] = 0.5  # summed over 16 channels: the top-right quarter of the image
    pixels = render(tmp_path / "layer.png", lambda ax: viz.layer_overlay(torch.zeros(8, 8), layer, mode="nearest",
                                                                         sign="positive", alpha=1.0, ax=ax))
    assert all(is_red(cell(pixels, r, c)) for r in range(4) for c in range(4, 8))
    assert all(is_grey(cell(pixels, r, c)) for r in range(4, 8) for c in range(8))
    assert viz.upsample(torch.ones(3, 4, 2, 2), (8, 8)).shape == (3, 1, 8, 8)


def test_percentile_keeps_one_outlier_from_washing_out_the_map(tmp_path):
    attr = torch.ones(8, 8)
    attr[7, 7] = 1000.0
    np.testing.assert_allclose(viz.normalize(attr, sign="positive", percentile=50)[0, 0], 1.0)
    np.testing.assert_allclose(viz.normalize(attr, sign="positive", percentile=100)[0, 0], 1e-3)
    clipped = render(tmp_path / "p50.png", lambda ax: viz.heatmap(attr, sign="positive", percentile=50, ax=ax))
    washed = render(tmp_path / "p100.png", lambda ax: viz.heatmap(attr, sign="positive", percentile=100, ax=ax))
    assert cell(clipped, 0, 0).min() < 0.3 and (cell(washed, 0, 0) > 0.9).all()


def test_normalize_ranges_and_zero_maps():
    a = torch.randn(50, generator=torch.Generator().manual_seed(1))
    assert np.abs(viz.normalize(a)).max() == 1
    for sign in ("positive", "negative", "absolute"):
        v = viz.normalize(a, sign=sign)
        assert v.min() >= 0 and v.max() == 1
    assert not viz.normalize(torch.zeros(3, 3)).any()
    assert not viz.normalize(torch.ones(4), sign="negative").any()


def test_grid_figure_has_the_expected_size(tmp_path):
    x = torch.rand(3, 1, 8, 8)
    attr = torch.zeros(3, 1, 8, 8)
    attr[:, :, 2:6, 2:6] = 1.0
    fig = viz.grid(x, {"input map": attr, "layer map": torch.rand(3, 4, 4, 4)}, column_titles=["a", "b", "c"],
                   title="a grid", panel=1.0)
    width, height = fig.get_size_inches()
    fig.savefig(tmp_path / "grid.png", dpi=50)
    plt.close(fig)
    pixels = mpimg.imread(tmp_path / "grid.png")
    assert pixels.shape[:2] == (round(50 * height), round(50 * width))
    red = (pixels[..., 0] > 0.6) & (pixels[..., 1] < 0.35) & (pixels[..., 2] < 0.35)
    assert red.sum() > 100


def test_tokens_html_colours_and_escapes():
    page = viz.tokens_html(["[CLS]", "good", "<b>", "bad"], torch.tensor([0.0, 2.0, 0.5, -1.0]), title="a & b")
    assert page._repr_html_() == str(page)
    assert "&lt;b&gt;" in page and "<b>" not in page and "a &amp; b" in page
    assert "rgba(217, 26, 26, 1.00)" in page  # "good": full red
    assert "rgba(26, 76, 217, 0.50)" in page  # "bad": half blue
    assert 'title="-1"' in page


def test_token_heatmap_png(tmp_path):
    ax = viz.token_heatmap(["a", "b", "c"], {"one": torch.tensor([1.0, 0.0, -1.0]), "two": np.array([0.0, 2.0, 0.0])})
    ax.figure.savefig(tmp_path / "tokens.png", dpi=40)
    plt.close(ax.figure)
    assert (tmp_path / "tokens.png").stat().st_size > 0


def test_bad_arguments_are_named():
    with pytest.raises(AttrfxValueError, match="`sign` must be one of"):
        viz.normalize(torch.ones(2), sign="both")
    with pytest.raises(AttrfxValueError, match="`percentile`"):
        viz.normalize(torch.ones(2), percentile=0)
    with pytest.raises(AttrfxValueError, match="`attribution` must be one map"):
        viz.heatmap(torch.ones(2, 3, 4, 4))
    with pytest.raises(AttrfxValueError, match="layer_overlay"):
        viz.overlay(torch.ones(8, 8), torch.ones(4, 4))
    with pytest.raises(AttrfxValueError, match="one score per token"):
        viz.tokens_html(["a"], torch.ones(2))
    plt.close("all")


def test_missing_matplotlib_gives_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match=r"attrfx\[viz\]"):
        viz.heatmap(torch.ones(4, 4))
    assert viz.tokens_html(["a"], torch.ones(1))  # HTML needs no matplotlib
