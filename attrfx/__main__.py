"""``python -m attrfx run ...`` and ``python -m attrfx show DIR``: see :mod:`attrfx.runs.cli`."""

import sys

from .runs.cli import main

if __name__ == "__main__":
    sys.exit(main())
