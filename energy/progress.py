"""Progress bars for long work (training, seeding, backfill, exports): one way, on stderr, with ETA.

By default tqdm draws only on a terminal (``disable=None``), so logs, pipes and tests see no bar;
``energy --progress`` draws it on stderr even when that is not a terminal (a CI log, a test) and
``energy --no-progress`` never draws it. stdout stays for the command's own output (a CSV or JSON
on stdout is never interleaved with a bar).
"""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm

_show: bool | None = None  # None: on a terminal only; set once by the CLI from --progress/--no-progress


def set_mode(show: bool | None) -> None:
    """``True``: always draw (on stderr); ``False``: never; ``None``: only when stderr is a terminal."""
    global _show
    _show = show


def progress(total: float | None = None, desc: str = "", unit: str = "it", **kwargs: Any) -> tqdm[Any]:
    disable = None if _show is None else not _show
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=disable, dynamic_ncols=True, **kwargs)
