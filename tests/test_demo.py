"""The main job runs end to end (a short version): accuracy, the completeness table, the figure."""

import matplotlib  # the demo and viz extras (run.sh installs them)

matplotlib.use("Agg")
import matplotlib.image as mpimg  # noqa: E402

from attrfx import demo  # noqa: E402


def test_demo_prints_the_table_and_saves_the_figure(tmp_path, capsys):
    demo.main(["--epochs", "1", "--images", "3", "--n-steps", "8", "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    assert "test accuracy" in printed
    for method in ("layer_gradcam", "layer_conductance", "neuron_conductance", "neuron_integrated_gradients",
                   "neuron_deeplift", "neuron_guided_backprop"):
        assert method in printed
    deeplift = next(line for line in printed.splitlines() if line.startswith("neuron_deeplift"))
    assert float(deeplift.split()[-1]) < 1e-5  # summation to delta: exact on a ReLU network
    pixels = mpimg.imread(tmp_path / "attributions.png")
    assert pixels.shape[0] > 500 and pixels.shape[1] > 400
