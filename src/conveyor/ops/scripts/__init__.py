"""Lua scripts, one file per state transition, loaded once and called by SHA.

A line ``-- @include name`` in a script is replaced by the helper functions of
``include/name.lua`` that the script uses (directly or through another helper). A script
defines its local functions anew on every call, and on Valkey 9 each definition costs
about 0.17 us: a single enqueue that included every helper spent 3 us on functions it
never called. The SHA is taken after expansion, so two versions of Conveyor can run side
by side on one Redis during a rolling deploy: each calls its own scripts.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

_INCLUDE = re.compile(r"^-- @include (\w+)\s*$", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class LuaScript:
    name: str
    source: str
    sha: str


def _read(relative: str) -> str:
    return resources.files(__name__).joinpath(relative).read_text(encoding="utf-8")


_FUNCTION = re.compile(r"^local function (\w+)\(.*?^end$", re.MULTILINE | re.DOTALL)
_WORD = re.compile(r"\b\w+\b")


def _helpers(include: str) -> list[tuple[str, str]]:
    """The ``local function`` definitions of an include file, in order: (name, source)."""
    return [(m.group(1), m.group(0)) for m in _FUNCTION.finditer(_read(f"include/{include}.lua"))]


@cache
def load(name: str) -> LuaScript:
    """Return the script ``<name>.lua`` with its includes expanded to the helpers it uses."""
    raw = _read(f"{name}.lua")
    includes = _INCLUDE.findall(raw)
    helpers = [helper for include in includes for helper in _helpers(include)]
    body = _INCLUDE.sub("", raw)
    needed = set(_WORD.findall(body))
    changed = True
    while changed:  # the helpers used by the helpers in use, and so on
        changed = False
        for helper, source in helpers:
            if helper in needed:
                words = set(_WORD.findall(source.split("\n", 1)[1]))
                if not words <= needed:
                    needed |= words
                    changed = True
    kept = "\n\n".join(source for helper, source in helpers if helper in needed)
    first = _INCLUDE.search(raw)
    if first is None:
        source = raw
    else:
        source = raw[: first.start()] + "\n" + kept + "\n" + _INCLUDE.sub("", raw[first.start() :])
    return LuaScript(name, source, hashlib.sha1(source.encode()).hexdigest())


def names() -> list[str]:
    return sorted(
        entry.name[:-4] for entry in resources.files(__name__).iterdir() if entry.name.endswith(".lua")
    )
