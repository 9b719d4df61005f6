"""The README's Python examples run as written (in order, in one namespace)."""

import pathlib
import re

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def test_readme_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 2
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    assert namespace["attr"].shape == namespace["x"].shape
    gap = namespace["axioms"].completeness_gap(namespace["attr"], namespace["change"]).abs().max()
    assert gap < 1e-2 * max(namespace["change"].abs().max().item(), 1.0)
