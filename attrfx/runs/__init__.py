"""Attributing a whole dataset: streamed to disk, resumable, summarised, sharded across processes.

:func:`attribute_dataset` runs any attrfx method over every batch of a dataset
and writes each example's attributions, index, label, target, prediction and
diagnostics to a directory of zarr v3 arrays as it goes (:mod:`~attrfx.runs.store`);
:func:`load_run` reads a run back lazily. Statistics per feature and per class
are gathered in the same pass (:mod:`~attrfx.runs.summary`). A run killed at any
moment continues with ``resume=True``; under ``torchrun`` each process takes a
disjoint share of the chunks (:mod:`~attrfx.runs.world`). The command line is
``python -m attrfx run ...`` / ``python -m attrfx show DIR`` (:mod:`~attrfx.runs.cli`).
"""

from .runner import attribute_dataset
from .store import Run, load_run
from .summary import Summary
from .world import rank_device

__all__ = ["Run", "Summary", "attribute_dataset", "load_run", "rank_device"]
