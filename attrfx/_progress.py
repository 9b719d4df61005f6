"""A dependency-free progress bar for long calls (``show_progress=True``).

Methods wrap the function they evaluate once per chunk (path points, or a
group of ablations) with :meth:`Progress.counting`; the primitives stay free
of any reporting.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable, Optional, TextIO


class Progress:
    """A text bar ``label [#####.....] done/total  elapsed`` redrawn in place on ``stream``.

    Example:
        >>> import io
        >>> out = io.StringIO()
        >>> with Progress("demo", 2, enabled=True, stream=out) as bar:
        ...     square = bar.counting(lambda v: v * v)
        ...     _ = square(2), square(3)
        >>> out.getvalue().splitlines()[-1].split()[:3]
        ['demo', '[##############################]', '2/2']
    """

    width = 30

    def __init__(self, label: str, total: Optional[int], *, enabled: bool = True, stream: Optional[TextIO] = None):
        self.label, self.total, self.enabled = label, total, bool(enabled)
        self.stream = stream if stream is not None else sys.stderr
        self.done, self.start = 0, time.perf_counter()

    def __enter__(self) -> "Progress":
        if self.enabled:
            self._draw()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()

    def counting(self, fn: Callable) -> Callable:
        """``fn``, advancing the bar by one after each call (``fn`` itself when disabled)."""
        if not self.enabled:
            return fn

        def counted(*args: Any, **kwargs: Any) -> Any:
            result = fn(*args, **kwargs)
            self.done += 1
            self._draw()
            return result

        return counted

    def _draw(self) -> None:
        filled = self.width * self.done // self.total if self.total else 0
        bar = "#" * filled + "." * (self.width - filled)
        of = f"/{self.total}" if self.total else ""
        self.stream.write(f"\r{self.label} [{bar}] {self.done}{of}  {time.perf_counter() - self.start:.1f}s")
        self.stream.flush()
