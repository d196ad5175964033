"""What every textmatch figure shares: matplotlib loaded on demand (an optional extra), figures
drawn off-screen (the object-oriented API on the Agg canvas: no pyplot, no display, safe in
threads), PNG files written atomically (one file) or as one transaction (a folder of figures),
font sizes for many labels, and the size of a PNG read from its header."""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import TextMatchError
from ..files import atomic_path, write_folder

DPI = 110
PLOTS_KIND = "plots"  # the kind recorded in the manifest of a folder write_figures wrote
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FIGURE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def require_matplotlib() -> Any:
    """The matplotlib module, or a TextMatchError saying how to install it."""
    try:
        import matplotlib
    except ImportError:
        raise TextMatchError('plots need matplotlib: pip install "textmatch[plots]"') from None
    return matplotlib


def new_figure(width_in: float, height_in: float, layout: str | None = "constrained") -> Any:
    """An empty matplotlib Figure of `width_in` x `height_in` inches on an Agg canvas (drawn
    off-screen). The constrained layout keeps titles, tick labels and colorbars inside the
    figure without changing its size, so a PNG is figsize x dpi pixels."""
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not (width_in > 0 and height_in > 0):
        raise TextMatchError(f"a figure needs a positive size, not {width_in} x {height_in} inches")
    fig = Figure(figsize=(width_in, height_in), layout=layout)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = DPI) -> Path:
    """Write `fig` as a PNG at `path` (the old file stays whole until the new one is complete)
    and return the path."""
    path = Path(path).expanduser()
    if path.suffix.lower() != ".png":
        raise TextMatchError(f"{path} does not end in .png; textmatch writes figures as PNG: name the file NAME.png")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return path


def write_figures(folder: str | os.PathLike, figures: Mapping[str, Any], dpi: int = DPI) -> list[Path]:
    """Write every figure as NAME.png into `folder`, in one transaction (textmatch.files.write_folder):
    the user's own files there are never overwritten (one with a figure's name is an error), a
    model's or an index's folder is refused, and the figures of an earlier call are replaced as a
    whole. Returns the paths of the PNG files."""
    if not figures:
        raise TextMatchError("write_figures got no figures; pass a dict {name: figure}")
    for name in figures:
        if not isinstance(name, str) or not FIGURE_NAME.fullmatch(name) or name.lower().endswith(".png"):
            raise TextMatchError(
                f"figure name {name!r} is not a plain file name; use letters, digits, '.', '_' or '-' without .png"
            )
    target = Path(folder).expanduser().absolute()
    with write_folder(target, PLOTS_KIND) as staging:
        for name, fig in figures.items():
            fig.savefig(staging / f"{name}.png", format="png", dpi=dpi)
    return [target / f"{name}.png" for name in figures]


def png_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) in pixels of the PNG at `path`, read from its IHDR header."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(24)
    except OSError as exc:
        raise TextMatchError(f"cannot read {path}: {exc.strerror or type(exc).__name__}; check the path") from None
    if len(head) < 24 or head[:8] != PNG_SIGNATURE or head[12:16] != b"IHDR":
        raise TextMatchError(f"{path} is not a PNG file; write it with save_figure")
    width, height = struct.unpack(">II", head[16:24])
    return width, height


def label_fontsize(n_labels: int, largest: float = 9.0, smallest: float = 6.0, per_label: float = 0.03) -> float:
    """A tick-label font size in points that shrinks as labels get more numerous, within
    [smallest, largest]."""
    return float(min(largest, max(smallest, largest - per_label * max(0, n_labels - 20))))


def text_width_in(texts: list[str], fontsize: float) -> float:
    """A generous estimate of the width in inches of the longest of `texts` at `fontsize` points
    (to size a figure around its tick labels before drawing)."""
    longest = max((len(t) for t in texts), default=0)
    return longest * fontsize * 0.6 / 72


def shorten(text: Any, max_chars: int = 32) -> str:
    """`text` as a string of at most `max_chars` characters (an ellipsis marks a cut)."""
    text = str(text)
    return text if len(text) <= max_chars else text[: max_chars - 1] + "\u2026"


def note(ax: Any, message: str, fontsize: float = 10) -> None:
    """A short centred message in place of an empty plot."""
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, fontsize=fontsize, color="0.35", wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])
