"""Progress bars for long calls (``show_progress=True``), drawn by tqdm.

A method opens :func:`progress` around its work and wraps the function it
evaluates once per forward pass with :meth:`Progress.counting` (or reports
settled examples with :meth:`Progress.advance`); the primitives stay free of
any reporting. ``tqdm.auto`` draws a widget in notebooks and text on stderr
elsewhere, redrawn at most every ``mininterval`` (0.1 s), so a log file gets a
few lines, not one per step. A disabled bar imports nothing and wraps nothing.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Optional


class Progress:
    """The bar of one call, or no bar (``bar=None``): counting and advancing then do nothing.

    Example:
        >>> with progress("demo", 2, enabled=False) as bar:
        ...     square = bar.counting(lambda v: v * v)
        ...     square(3)
        9
    """

    def __init__(self, bar: Optional[Any] = None):
        self.bar = bar

    def counting(self, fn: Callable) -> Callable:
        """``fn``, advancing the bar by one after each call (``fn`` itself when there is no bar)."""
        if self.bar is None:
            return fn

        def counted(*args: Any, **kwargs: Any) -> Any:
            result = fn(*args, **kwargs)
            self.bar.update(1)
            return result

        return counted

    def advance(self, n: int, **postfix: Any) -> None:
        """Advance the bar by ``n``, showing ``postfix`` (e.g. ``evaluations=96``) beside it."""
        if self.bar is not None:
            if postfix:
                self.bar.set_postfix(postfix, refresh=False)
            self.bar.update(n)


@contextlib.contextmanager
def progress(label: str, total: int, *, enabled: bool, unit: str = "pass") -> Iterator[Progress]:
    """A :class:`Progress` over ``total`` steps of ``unit``, labelled ``label``, closed on every exit.

    Example:
        >>> with progress("demo", 2, enabled=True) as bar:    # draws "demo: 100%|███| 2/2 ..." on stderr
        ...     square = bar.counting(lambda v: v * v)
        ...     square(2), square(3)
        (4, 9)
    """
    if not enabled:
        yield Progress()
        return
    from tqdm.auto import tqdm  # only when a bar is drawn

    with tqdm(total=total, desc=label, unit=unit) as bar:
        yield Progress(bar)
