"""Opt-in crash points, for reliability tests: hard-exit the worker at a named transition.

``CONVEYOR_FAULT_POINT=after_claim:0.1`` makes a worker process die with
``os._exit(FAULT_EXIT_CODE)`` -- no cleanup, no hand-back, like a SIGKILL or a power cut
-- each time it passes the point ``after_claim``, with probability 0.1 (default 1).
The points, in the order a job meets them:

* ``after_claim``: the claim script returned the job; nothing of it has run;
* ``in_promotion``: the same place, named for runs of delayed jobs. Promotion and claim
  are one atomic script, so no crash can land between them: this is the first
  instruction after a claim that promoted;
* ``before_handler``: the job is decoded and about to run;
* ``after_handler``: the handler returned; its result is not acknowledged yet;
* ``in_retry``: the handler raised and a retry was decided; not recorded yet.

Unset (production), :data:`ARMED` is False and the worker skips every point with one
test of a module constant.
"""

from __future__ import annotations

import os
import random

POINTS = ("after_claim", "in_promotion", "before_handler", "after_handler", "in_retry")
FAULT_EXIT_CODE = 86
"""Exit code of a planned crash, so a test tells it apart from a real one."""


def _parse(spec: str | None) -> tuple[frozenset[str], float]:
    if not spec:
        return frozenset(), 0.0
    name, _, probability = spec.partition(":")
    names = frozenset(n.strip() for n in name.split(","))
    unknown = names - set(POINTS)
    if unknown:
        raise ValueError(f"CONVEYOR_FAULT_POINT names unknown points {sorted(unknown)}; known: {POINTS}")
    return names, float(probability or 1.0)


_NAMES, _PROBABILITY = _parse(os.environ.get("CONVEYOR_FAULT_POINT"))
ARMED = bool(_NAMES)
"""True when a crash point is configured; the worker tests this before calling :func:`reach`."""


def reach(point: str) -> None:
    """Die here, at once, if ``point`` is armed (and the dice say so)."""
    if point in _NAMES and random.random() < _PROBABILITY:
        os.write(2, f"conveyor: planned crash at {point} (CONVEYOR_FAULT_POINT)\n".encode())
        os._exit(FAULT_EXIT_CODE)
