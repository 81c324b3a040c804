"""What every report's figures share: a headless pyplot, panel grids, one colour per learner,
PNG bytes (written atomically by the results folder), and the library versions results record."""

from __future__ import annotations

import io
from typing import Any


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape the numbers, recorded in every results.json."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("hf-icl", "torch", "transformers", "datasets", "accelerate", "peft", "evaluate"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (runs have no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png_bytes(fig, dpi: int = 110) -> bytes:
    """Render a matplotlib figure to PNG bytes and free it (files are written atomically later)."""
    plt = pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()


def panel_grid(count: int, columns: int = 3, extra_height: float = 0.0):
    """A figure with ``count`` panels on a grid of at most ``columns`` columns, unused cells hidden;
    returns (figure, the ``count`` axes in reading order)."""
    plt = pyplot()
    cols = min(columns, count)
    rows = -(-count // cols)
    fig, grid = plt.subplots(
        rows, cols, figsize=(5 * cols, 3.8 * rows + extra_height), squeeze=False
    )
    for ax in grid.flat[count:]:
        ax.set_visible(False)
    return fig, list(grid.flat[:count])


def colours(labels: list[str]) -> dict[str, Any]:
    """One colour per label, the same in every panel (tab10, or tab20 beyond ten)."""
    palette = pyplot().get_cmap("tab10" if len(labels) <= 10 else "tab20")
    return {label: palette(i % palette.N) for i, label in enumerate(labels)}
