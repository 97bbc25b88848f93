"""SONA — Self-Optimizing Neural Architecture.

A self-improving layer for LLM applications: per query it adapts the query representation with LoRA,
recalls what worked for similar queries (ReasoningBank), routes to the cheapest model tier that will
answer well, and learns from feedback at three timescales without forgetting what already works.

The heavy lifting is in a Rust core (``sona._sona``); this package is its typed Python surface.
Components are usable on their own: :mod:`sona.kernels`, ``sona.lora``, ``sona.ewc``,
``sona.reasoning``, ``sona.index``, ``sona.router``, ``sona.embed``, ``sona.backends``; the
product is :class:`sona.SONAEngine` (:mod:`sona.engine`).
"""

from __future__ import annotations

from sona._sona import __version__
from sona.engine import (
    DeepLearningResult,
    LearningMode,
    LearningResult,
    Response,
    SONAConfig,
    SONAEngine,
)
from sona.errors import (
    BackendError,
    CheckpointError,
    ConfigError,
    DimensionError,
    InternalError,
    InvalidInputError,
    MissingDependencyError,
    NonFiniteError,
    NotAvailableError,
    NumericalError,
    SonaError,
    UnknownIdError,
)

__all__ = [
    "BackendError",
    "CheckpointError",
    "ConfigError",
    "DeepLearningResult",
    "DimensionError",
    "InternalError",
    "InvalidInputError",
    "LearningMode",
    "LearningResult",
    "MissingDependencyError",
    "NonFiniteError",
    "NotAvailableError",
    "NumericalError",
    "Response",
    "SONAConfig",
    "SONAEngine",
    "SonaError",
    "UnknownIdError",
    "__version__",
]
