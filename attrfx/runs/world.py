"""The processes of a run: one, or the ranks ``torchrun`` started (``torch.distributed``).

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous
address in each process's environment; :func:`join` starts the process group
from them (gloo on the CPU, nccl with GPUs) unless the program already did, and
:func:`rank_device` is the process's device. Nothing else launches processes.
"""

from __future__ import annotations

import os
from typing import Callable, NamedTuple, Optional, TypeVar

import torch

T = TypeVar("T")


class World(NamedTuple):
    """This process's ``rank`` among ``size`` processes; collectives run on ``device``; ``started`` says whether
    :func:`join` started the process group (and so ends it)."""

    rank: int
    size: int
    device: torch.device
    started: bool

    def together(self, step: Callable[[], T]) -> T:
        """``step()`` in every process; if it fails in any, it fails in all (:meth:`agree`)."""
        try:
            result = step()
        except Exception as err:  # every process must learn that this step failed somewhere
            self.agree(False, err)
        self.agree(True)
        return result

    def agree(self, ok: bool, error: Optional[BaseException] = None) -> None:
        """Every process reports whether its step succeeded; all raise if any failed (``error`` where it was this
        one), so none waits forever on a process that stopped. A no-op for one process."""
        if self.size > 1:
            import torch.distributed as dist

            flag = torch.tensor([int(ok)], device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MIN)
            ok = ok and bool(flag.item())
            if not ok and error is None:
                raise RuntimeError("attribute_dataset: another process of the run failed (its error is in its "
                                   "own output); nothing it had not committed was kept")
        if error is not None:
            raise error


def rank_device() -> torch.device:
    """The device of this process: ``cuda:LOCAL_RANK`` where CUDA is available, the CPU otherwise.

    Example:
        >>> rank_device().type in ("cpu", "cuda")
        True
    """
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def join() -> World:
    """This process's :class:`World`: the existing process group, the one ``torchrun``'s environment describes
    (started here: nccl with CUDA, gloo otherwise), or a single process."""
    import torch.distributed as dist

    started = False
    if dist.is_available() and not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(rank_device())
        dist.init_process_group(backend=backend)
        started = True
    if not (dist.is_available() and dist.is_initialized()):
        return World(0, 1, torch.device("cpu"), False)
    device = rank_device() if dist.get_backend() == "nccl" else torch.device("cpu")
    return World(dist.get_rank(), dist.get_world_size(), device, started)


def leave(world: World) -> None:
    """End the process group if :func:`join` started it."""
    if world.started:
        import torch.distributed as dist

        dist.destroy_process_group()
