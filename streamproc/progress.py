"""Progress bars (tqdm, on stderr) for the batch commands, shown only where a person watches them."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import Any, TextIO, TypeVar

from tqdm import tqdm

__all__ = ["wanted", "bar"]

T = TypeVar("T")


def wanted(flag: bool | None, stream: TextIO | None = None) -> bool:
    """Show progress when asked (``--progress``) or, unasked, when ``stream`` (stderr) is a terminal."""
    if flag:
        return True
    s = stream if stream is not None else sys.stderr
    try:
        return bool(s.isatty())
    except (AttributeError, ValueError):
        return False


def bar(items: Iterable[T], *, enabled: bool, desc: str, unit: str = "it", total: int | None = None,
        **kw: Any) -> Iterator[T]:
    """``items``, with a bar on stderr when ``enabled`` (otherwise exactly ``items``)."""
    if not enabled:
        yield from items
        return
    yield from tqdm(items, total=total, desc=desc, unit=unit, unit_scale=True, file=sys.stderr, smoothing=0.1,
                    **kw)
