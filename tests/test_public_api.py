"""The public API is guarded: ``__all__`` sorted and complete, old module paths deprecated.

A name users import must not appear or vanish by accident (a helper imported into a package's
``__init__`` becomes public API the moment someone uses it), so each package facade lists
exactly what it binds, and the public vocabulary of ``conveyor`` includes every exception a
task or a caller may need to name.
"""

from __future__ import annotations

import importlib
import inspect
import sys
import types
import warnings

import pytest

import conveyor
from conveyor import errors

FACADES = ["conveyor", "conveyor.ops", "conveyor.worker", "conveyor.api", "conveyor.httpcall"]


def _bound_public_names(module: types.ModuleType) -> set[str]:
    """Names the module binds that are neither private nor its own submodules."""
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and not (inspect.ismodule(value) and value.__name__.startswith(module.__name__ + "."))
        and name != "annotations"  # from __future__ import annotations
    }


def _isort_style(name: str) -> tuple[int, str]:
    """The order ruff's RUF022 keeps: constants, then classes, then functions and the rest."""
    return (0 if name.isupper() else 1 if name[:1].isupper() else 2, name)


@pytest.mark.parametrize("name", FACADES)
def test_all_is_sorted(name: str) -> None:
    module = importlib.import_module(name)
    assert list(module.__all__) == sorted(module.__all__, key=_isort_style)


@pytest.mark.parametrize("name", FACADES)
def test_all_lists_exactly_what_the_facade_binds(name: str) -> None:
    module = importlib.import_module(name)
    listed = set(module.__all__) - {"__version__"}
    bound = _bound_public_names(module)
    assert bound - listed == set(), "bound but not in __all__"
    assert listed - bound == set(), "in __all__ but not bound"


def test_every_public_exception_is_part_of_the_vocabulary() -> None:
    exceptions = {
        name
        for name, value in vars(errors).items()
        if inspect.isclass(value)
        and issubclass(value, BaseException)
        and value.__module__ == errors.__name__
        and not name.startswith("_")
    }
    assert exceptions - set(conveyor.__all__) == set()


@pytest.mark.parametrize(
    ("old", "new_modules"),
    [
        ("conveyor.operations", ["conveyor.ops"]),
        (
            "conveyor.transport",
            [
                "conveyor.redis.base",
                "conveyor.redis.endpoint",
                "conveyor.redis.waits",
                "conveyor.redis.resp_sync",
                "conveyor.redis.resp_async",
                "conveyor.redis.redispy",
            ],
        ),
    ],
)
def test_old_module_paths_still_import_with_a_deprecation_warning(old: str, new_modules: list[str]) -> None:
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=old.replace(".", r"\.") + " moved to"):
        shim = importlib.import_module(old)
    sys.modules.pop(old, None)  # so a later import warns again
    assert shim.__all__, "the shim re-exports nothing"
    homes = [importlib.import_module(name) for name in new_modules]
    for name in shim.__all__:
        value = getattr(shim, name)
        assert any(getattr(home, name, None) is value for home in homes), name


def test_the_package_itself_imports_without_warnings() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in FACADES:
            importlib.reload(importlib.import_module(name))
