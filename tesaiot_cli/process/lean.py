"""Keep a tesaiot process from importing pandas on pyarrow's behalf.

pyarrow imports pandas, when it is installed, the first time it converts Python values
(``pa.array([...])``, ``pa.scalar(...)``, the compute functions given a Python value), to
see whether it was handed pandas objects. In a tesaiot process that costs 34 MiB of RSS and
0.18 s, once: the recorder paid it at its first flush (record's peak RSS went from ~110 to
~160 MiB wherever pandas is installed), and the export at its first batch. tesaiot never
gives pyarrow pandas objects and never asks it for them.

:func:`refuse_pandas_for_pyarrow` puts a finder in front of the import system that refuses
``import pandas`` when the code importing it is tesaiot's or pyarrow's (pyarrow's compiled
code has no Python frame: the nearest one is the caller's). pyarrow treats pandas as not
installed and, in the versions tested (17 to 26), remembers it; a later version that asked
again would only be refused again, a little slower, never broken. Anything else in the
process (a test, a user's library) imports pandas as usual. Only the command line installs
it (``tesaiot`` and the record workers it starts), never ``import tesaiot_cli``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

_REFUSED_FOR = ("tesaiot_cli", "pyarrow")


class _RefusePandas:
    """A meta path finder: ``import pandas`` from tesaiot's or pyarrow's code fails
    (``refused`` counts how often)."""

    def __init__(self) -> None:
        self.refused = 0

    def find_spec(self, name: str, path: Sequence[str] | None = None, target: ModuleType | None = None) -> Any:
        if name != "pandas":
            return None
        frame = sys._getframe(1)  # noqa: SLF001 - the importing code is the first frame outside importlib
        while frame is not None and frame.f_code.co_filename.startswith("<frozen importlib"):
            frame = frame.f_back  # type: ignore[assignment]
        module = str(frame.f_globals.get("__name__", "")) if frame is not None else ""
        if module.split(".")[0] in _REFUSED_FOR:
            self.refused += 1
            raise ImportError("pandas is not used by tesaiot (tesaiot_cli.process.lean)", name="pandas")
        return None


def refuse_pandas_for_pyarrow() -> None:
    """Install the finder (once); nothing when pandas is already imported."""
    if "pandas" in sys.modules or any(isinstance(f, _RefusePandas) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _RefusePandas())
