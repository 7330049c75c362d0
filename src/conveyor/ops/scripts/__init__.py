"""Lua scripts, one file per state transition, loaded once and called by SHA.

A line ``-- @include name`` in a script is replaced by the helper functions and named
constants (``local NAME = value``) of ``include/name.lua`` that the script uses (directly
or through another helper). A script
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
_CONSTANT = re.compile(r"^local ([A-Z][A-Z0-9_]*) = .*$", re.MULTILINE)
_WORD = re.compile(r"\b\w+\b")


@dataclass(frozen=True, slots=True)
class _Helper:
    name: str
    source: str
    uses: frozenset[str]
    """The words of its body: the helpers and constants it may need."""


def _constants(include: str) -> list[_Helper]:
    """The named constants (``local NAME = value``) of an include file, in order."""
    return [
        _Helper(m.group(1), m.group(0), frozenset(_WORD.findall(m.group(0).split("=", 1)[1])))
        for m in _CONSTANT.finditer(_read(f"include/{include}.lua"))
    ]


def _functions(include: str) -> list[_Helper]:
    """The ``local function`` definitions of an include file, in order."""
    return [
        _Helper(m.group(1), m.group(0), frozenset(_WORD.findall(m.group(0).split("\n", 1)[1])))
        for m in _FUNCTION.finditer(_read(f"include/{include}.lua"))
    ]


@cache
def load(name: str) -> LuaScript:
    """Return the script ``<name>.lua`` with its includes expanded to the helpers it uses."""
    raw = _read(f"{name}.lua")
    includes = _INCLUDE.findall(raw)
    # Constants before every function: a function sees a local only if it is declared above it.
    helpers = [c for include in includes for c in _constants(include)]
    helpers += [f for include in includes for f in _functions(include)]
    body = _INCLUDE.sub("", raw)
    needed = set(_WORD.findall(body))
    changed = True
    while changed:  # the helpers used by the helpers in use, and so on
        changed = False
        for helper in helpers:
            if helper.name in needed and not helper.uses <= needed:
                needed |= helper.uses
                changed = True
    kept = "\n\n".join(helper.source for helper in helpers if helper.name in needed)
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
