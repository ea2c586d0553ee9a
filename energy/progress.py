"""Progress bars for long work (training, seeding, backfill, exports): one way, on stderr.

tqdm draws only on a terminal (``disable=None``), so logs, pipes and tests see no bar; stdout stays
for the command's own output (a CSV on stdout is never interleaved with a bar).
"""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm


def progress(total: float | None = None, desc: str = "", unit: str = "it", **kwargs: Any) -> tqdm[Any]:
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=None, dynamic_ncols=True, **kwargs)
