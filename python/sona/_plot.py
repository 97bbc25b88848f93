"""Plot plumbing shared by the evaluations and ``sona report``: a headless pyplot and one way to
write a figure (matplotlib comes with the ``eval`` extra, so it is imported only when plotting)."""

from __future__ import annotations

from types import ModuleType
from typing import Any


def pyplot() -> ModuleType:
    """``matplotlib.pyplot`` on the headless Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str) -> str:
    """Lays ``fig`` out, writes it to ``path`` at 110 dpi, closes it and returns ``path``."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
