"""Progress bars that follow tqdm's convention: drawn on a terminal, silent in a log.

tqdm redraws a bar with carriage returns; written to a file, every redraw becomes a
line (a 3-minute ``make demo`` wrote 7,480 of them).  ``disable=None`` is tqdm's
own switch for this: the bar is drawn only when its stream is a terminal, so a
redirected run logs the commands' own summary lines and nothing per refresh.
"""
from __future__ import annotations

from tqdm.auto import tqdm


def progress_bar(iterable=None, *, enabled: bool = True, **kwargs) -> tqdm:
    """A tqdm bar (same arguments) shown only when ``enabled`` and stderr is a terminal."""
    return tqdm(iterable, disable=None if enabled else True, **kwargs)
