"""Settings as frozen value objects, read from the environment by one function.

Precedence, highest first: a keyword argument, a ``CONVEYOR_*`` environment variable, the
default. (A config file layer sits between the environment and the defaults once it exists.)
:func:`from_env` applies it to every settings class -- the producers' :class:`Settings`,
the API's and the HTTP calls' -- so each variable is read and converted the same way.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, fields, replace
from functools import cache
from typing import TYPE_CHECKING, Any, TypeVar, get_type_hints

from .errors import ConfigurationError
from .ops.keys import DEFAULT_PREFIX
from .serialization import DEFAULT_MAX_PAYLOAD_BYTES

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

    S = TypeVar("S", bound=DataclassInstance)
else:
    S = TypeVar("S")

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


@dataclass(frozen=True, slots=True)
class Settings:
    """Connection and behaviour shared by producers and workers.

    Every field can be set from the environment as ``CONVEYOR_<FIELD>`` (upper case).
    """

    redis_url: str = DEFAULT_REDIS_URL
    prefix: str = DEFAULT_PREFIX
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    durable_replicas: int = 0
    """Durable enqueue: with N > 0, an enqueue returns only once N replicas acknowledged the
    write (``WAIT``), and raises :class:`~conveyor.errors.NotDurable` when they did not
    within ``durable_timeout_ms``. 0: the primary's acknowledgement is enough."""
    durable_timeout_ms: int = 1000
    cluster_wait_ms: int = 30_000
    """Redis Cluster: how long a call waits out refusals -- ``TRYAGAIN`` and redirections
    while a slot migrates, ``CLUSTERDOWN`` during a failover, all of which mean the command
    did not run -- before raising :class:`~conveyor.errors.ClusterUnavailable`."""
    history_url: str | None = None
    """The history store of finished jobs (``sqlite:///path`` or ``postgresql://...``), read
    by ``client.history``; archived into by workers and the API that have it (see
    :mod:`conveyor.history`)."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, then the environment, then ``overrides`` (ignoring ``None`` values)."""
        return from_env(cls, environ, overrides)


def from_env(
    cls: type[S],
    environ: Mapping[str, str] | None,
    overrides: Mapping[str, Any],
    *,
    prefix: str = "CONVEYOR_",
    shared: Collection[str] = (),
    skip: Collection[str] = (),
    parse: Mapping[str, Callable[[str], Any]] | None = None,
) -> S:
    """An instance of the settings dataclass ``cls``: its defaults, then the environment
    (``os.environ`` unless ``environ``), then ``overrides`` (where not ``None``).

    Field ``name`` is read from ``<prefix><NAME>``, or from ``CONVEYOR_<NAME>`` if it is
    ``shared`` (one variable for every part of Conveyor: the Redis URL, the key prefix), and
    converted by its type: ``str``, ``int``, ``float`` or ``tuple[str, ...]`` (comma-separated),
    or by ``parse[name]``. An empty variable counts as unset; fields in ``skip`` are not read.
    A value that does not convert raises :class:`~conveyor.errors.ConfigurationError`
    naming the variable.
    """
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for name, kind in _field_types(cls).items():
        if name in skip:
            continue
        variable = f"CONVEYOR_{name.upper()}" if name in shared else f"{prefix}{name.upper()}"
        raw = env.get(variable)
        if raw:
            convert = parse.get(name) if parse else None
            values[name] = _convert(variable, raw, convert or _converter(cls, name, kind))
    values.update({k: v for k, v in overrides.items() if v is not None})
    return replace(cls(), **values)


def comma_list(raw: str) -> tuple[str, ...]:
    """``"a, b,,c"`` as ``("a", "b", "c")``: how a list is written in one variable."""
    return tuple(item.strip() for item in raw.split(",") if item.strip())


@cache
def _field_types(cls: type[Any]) -> dict[str, Any]:
    hints = get_type_hints(cls)
    return {f.name: hints[f.name] for f in fields(cls)}


_CONVERTERS: dict[Any, Callable[[str], Any]] = {
    str: str,
    str | None: str,
    int: int,
    float: float,
    tuple[str, ...]: comma_list,
}

_EXPECTED: dict[Any, str] = {int: "an integer", float: "a number"}


def _converter(cls: type[Any], name: str, kind: Any) -> Callable[[str], Any]:
    try:
        return _CONVERTERS[kind]
    except KeyError:
        raise TypeError(
            f"{cls.__name__}.{name}: no conversion from text for {kind}; pass parse= or skip="
        ) from None


def _convert(variable: str, raw: str, convert: Callable[[str], Any]) -> Any:
    try:
        return convert(raw)
    except ValueError:
        expected = _EXPECTED.get(convert, "a valid value")
        raise ConfigurationError(f"{variable} must be {expected}, got {raw!r}") from None
