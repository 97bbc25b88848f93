"""Built-in evaluations and benchmarks (design §11).

Every module in this package registers its jobs in :data:`sona.cli.EVALS` / :data:`sona.cli.BENCHES`
when imported; the CLI imports them all, so adding an evaluation is adding one module here.
"""

from __future__ import annotations

import importlib
import pkgutil


def load_all() -> None:
    """Import every evaluation module so that it registers its CLI jobs."""
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")
