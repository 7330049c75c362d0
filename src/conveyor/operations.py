"""Deprecated: moved to :mod:`conveyor.ops` (split by concern); this re-export module stays
for one release."""

import warnings

from .ops import *  # noqa: F403
from .ops import __all__ as __all__

warnings.warn(
    "conveyor.operations moved to conveyor.ops (steps, enqueue, lifecycle, manage, reads); "
    "this alias goes away in the next release",
    DeprecationWarning,
    stacklevel=2,
)
