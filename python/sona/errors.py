"""The exceptions SONA raises. All derive from :class:`SonaError`.

==================  ==============================  =============================================
class               also a                          raised when
==================  ==============================  =============================================
DimensionError      ``ValueError``                  a vector or matrix has the wrong length/shape
InvalidInputError   ``ValueError``                  a value is out of range or of the wrong dtype
NonFiniteError      ``InvalidInputError``           an input contains NaN or Inf
ConfigError         ``ValueError``                  a configuration value is out of range
UnknownIdError      ``KeyError``                    an id or token is unknown or already used
CheckpointError                                     a saved file is corrupted or mismatched
NumericalError                                      an update would make weights non-finite
InternalError                                       a bug, including a Rust panic caught at the FFI
==================  ==============================  =============================================

The classes are created by the Rust extension (so Rust and Python raise the very same types) and
re-exported here. Calls that fail leave the object they were called on unchanged.
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

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DimensionError",
    "InternalError",
    "InvalidInputError",
    "NonFiniteError",
    "NumericalError",
    "SonaError",
    "UnknownIdError",
]
