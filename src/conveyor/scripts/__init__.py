"""Lua scripts, one file per state transition, loaded once and called by SHA.

A line ``-- @include name`` in a script is replaced by ``include/name.lua``. The SHA is
taken after expansion, so two versions of Conveyor can run side by side on one Redis
during a rolling deploy: each calls its own scripts.
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


@cache
def load(name: str) -> LuaScript:
    """Return the script ``<name>.lua`` with its includes expanded."""
    raw = _read(f"{name}.lua")
    source = _INCLUDE.sub(lambda m: _read(f"include/{m.group(1)}.lua"), raw)
    return LuaScript(name, source, hashlib.sha1(source.encode()).hexdigest())


def names() -> list[str]:
    return sorted(
        entry.name[:-4] for entry in resources.files(__name__).iterdir() if entry.name.endswith(".lua")
    )
