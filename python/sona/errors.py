"""The exceptions SONA raises. All derive from :class:`SonaError`.

======================  ========================  ==================================================
class                   also a                    raised when
======================  ========================  ==================================================
DimensionError          ``ValueError``            a vector or matrix has the wrong length/shape
InvalidInputError       ``ValueError``            a value is out of range or of the wrong dtype
NonFiniteError          ``InvalidInputError``     an input contains NaN or Inf
ConfigError             ``ValueError``            a configuration value is out of range
UnknownIdError          ``KeyError``              an id or token is unknown or already used
CheckpointError                                   a saved file is corrupted or mismatched
NumericalError                                    an update would make weights non-finite
InternalError                                     a bug, including a Rust panic caught at the FFI
BackendError                                      a tier backend raised or timed out (``query``)
MissingDependencyError  ``ImportError``           an optional package (an adapter's) is missing
NotAvailableError       ``NotImplementedError``   a feature this build does not provide
======================  ========================  ==================================================

The first eight classes are created by the Rust extension (so Rust and Python raise the very same
types) and re-exported here; the last three are raised only by Python code and defined here.
Calls that fail leave the object they were called on unchanged.
"""

from __future__ import annotations

from sona._sona import (
    CheckpointError,
    ConfigError,
    DimensionError,
    InternalError,
    InvalidInputError,
    NonFiniteError,
    NumericalError,
    SonaError,
    UnknownIdError,
)


class BackendError(SonaError):
    """A tier backend failed (raised, timed out or returned something that is not text).

    The original exception is chained as ``__cause__``; ``trajectory_id`` and ``tier`` say which
    routed request failed (it was recorded as failed, reward 0 with source ``"error"``).
    """

    def __init__(self, message: str, *, trajectory_id: int | None = None, tier: int | None = None):
        super().__init__(message)
        self.trajectory_id = trajectory_id
        self.tier = tier


class MissingDependencyError(SonaError, ImportError):
    """An optional package an adapter needs is not installed; the message says what to install."""


class NotAvailableError(SonaError, NotImplementedError):
    """A documented feature that this version does not implement yet."""


__all__ = [
    "BackendError",
    "CheckpointError",
    "ConfigError",
    "DimensionError",
    "InternalError",
    "InvalidInputError",
    "MissingDependencyError",
    "NonFiniteError",
    "NotAvailableError",
    "NumericalError",
    "SonaError",
    "UnknownIdError",
]
