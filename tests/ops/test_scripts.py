"""Static checks of the Lua scripts: header contracts, KEYS counts, hash tags, no literal keys,
and the binding block: every KEYS and ARGV entry named once at a script's top, the key names
in the order the wrapper's NamedTuple lists them, no index into KEYS or ARGV elsewhere."""

from __future__ import annotations

import re
from importlib import resources

import pytest

from conveyor import JobState, Schedule, ops
from conveyor.ops import flows, history, schedules
from conveyor.ops.keys import QueueKeys
from conveyor.ops.scripts import load, names

KEYS = QueueKeys("q")
RETAIN = ops.Retention(-1, -1)

# One call of each operation that runs a script, to see the keys its wrapper passes.
CALLS = {
    "enqueue": lambda: ops.enqueue(KEYS, [ops.NewJob("x", "t", b"[]", ("p", 1))]),
    "enqueue_plain": lambda: ops.enqueue(KEYS, [ops.NewJob("x", "t", b"[]")]),
    "claim": lambda: ops.claim(KEYS, 1, 1000, "w"),
    "complete": lambda: ops.complete(KEYS, RETAIN, []),
    "fail": lambda: ops.fail(KEYS, RETAIN, []),
    "extend": lambda: ops.extend(KEYS, 1000, []),
    "sweep": lambda: ops.sweep(KEYS, 3, RETAIN),
    "requeue": lambda: ops.requeue(KEYS, []),
    "retry": lambda: ops.retry_failed(KEYS, None),
    "remove": lambda: ops.remove(KEYS, "x"),
    "purge": lambda: ops.purge(KEYS, []),
    "await": lambda: ops.wait_result(KEYS, "x", 1),
    "cancel": lambda: ops.cancel(KEYS, "x", "me", "why", RETAIN),
    "progress": lambda: ops.report(KEYS, "x", "1", "log", "line", 10, 1000),
    "schedule": lambda: schedules._tick(KEYS, Schedule("s", "t", every=1), 0, 1000, True),
    "counts": lambda: ops.counts(KEYS),
    "figures": lambda: ops.figures(KEYS),
    "list": lambda: ops.list_jobs(KEYS, JobState.WAITING),
    "promote": lambda: ops.promote(KEYS, "x"),
    "child": lambda: flows.child_finished(KEYS, "x", "q c", "c", "null", RETAIN),
    "archived": lambda: history.archived(KEYS, [history.Entry("1-0", [], 1)]),
    "history_on": lambda: history.enable(KEYS),
}


def test_every_script_has_a_wrapper() -> None:
    assert sorted(CALLS) == names()


@pytest.mark.parametrize("name", sorted(CALLS))
def test_header_declares_the_keys_the_wrapper_passes(name: str) -> None:
    script = load(name)
    raw = script.source.split("\n\n")[0]
    for word in ("KEYS[1]", "Returns", "Errors"):
        assert word in raw, f"{name}.lua header must document {word}"
    step = next(CALLS[name]())
    assert isinstance(step, ops.Script) and step.script.name == name
    declared = {int(n) for n in re.findall(r"KEYS\[(\d+)\]", raw)}
    used = {int(n) for n in re.findall(r"KEYS\[(\d+)\]", script.source)}
    assert declared == used == set(range(1, len(step.keys) + 1)), (
        f"{name}: header declares {sorted(declared)}, code uses {sorted(used)}, "
        f"wrapper passes {len(step.keys)}"
    )


@pytest.mark.parametrize("name", sorted(CALLS))
def test_all_keys_share_the_queue_hash_tag(name: str) -> None:
    step = next(CALLS[name]())
    assert all("{q}" in key for key in step.keys)


@pytest.mark.parametrize("name", names())
def test_no_key_is_a_literal_or_interpolated(name: str) -> None:
    source = load(name).source
    literal_keys = re.findall(r"redis\.call\('(\w+)',\s*'", source)
    assert literal_keys == [], f"{name}.lua names a key literally: {literal_keys}"
    assert "redis.call('KEYS'" not in source and "redis.call('SCAN'" not in source


# The binding block: the lines between a script's header (its first paragraph, includes
# and all) and the next blank line. Each binds one name: ``local x = KEYS[n]``; ``local x =
# ARGV[n]`` (or ``tonumber(ARGV[n])``, or ``ARGV[n] == '1'``); ``local first_x = n``, where a
# variable-length tail of ARGV starts; ``local argc = #ARGV``.
_BINDING = re.compile(r"^local (\w+) = (.+?)\s*(?:--.*)?$")
_KEY = re.compile(r"^KEYS\[(\d+)\]$")
_ARG = re.compile(r"^(?:tonumber\()?ARGV\[(\d+)\]\)?(?: == '1')?$")
_START = re.compile(r"^\d+$")
_HEADER_KEY = re.compile(r"KEYS\[(\d+)\] (\w+)")
_HEADER_ARG = re.compile(r"ARGV\[(\d+)\] (\w+)")


def _raw(name: str) -> str:
    return resources.files("conveyor.ops.scripts").joinpath(name).read_text(encoding="utf-8")


class Bindings:
    """A script's header, binding block and body, read from its file."""

    def __init__(self, name: str) -> None:
        self.header, _, rest = _raw(f"{name}.lua").partition("\n\n")
        block, _, self.body = rest.partition("\n\n")
        self.keys: list[tuple[int, str]] = []
        self.args: list[tuple[int, str]] = []
        self.starts: dict[str, int] = {}
        self.argc: set[str] = set()
        for line in block.splitlines():
            match = _BINDING.match(line)
            assert match, f"{name}.lua: the binding block holds only bindings: {line!r}"
            local, value = match.groups()
            if key := _KEY.match(value):
                self.keys.append((int(key.group(1)), local))
            elif arg := _ARG.match(value):
                self.args.append((int(arg.group(1)), local))
            elif _START.match(value):
                self.starts[local] = int(value)
            elif value == "#ARGV":
                self.argc.add(local)
            else:
                raise AssertionError(f"{name}.lua: not a binding of KEYS or ARGV: {line!r}")


def lua_name(field: str) -> str:
    """The one rule (see conveyor.ops.script_keys): a key is bound as ``<field>_key``, a
    prefix of keys as its field name."""
    return field if field.endswith("_prefix") else f"{field}_key"


@pytest.mark.parametrize("name", sorted(CALLS))
def test_binding_block_names_the_keys_the_wrapper_passes_in_order(name: str) -> None:
    bound = Bindings(name)
    step = next(CALLS[name]())
    assert isinstance(step, ops.Script)
    fields = getattr(type(step.keys), "_fields", None)
    assert fields is not None, f"{name}: the wrapper must pass its keys as a NamedTuple"
    assert [n for n, _ in bound.keys] == list(range(1, len(bound.keys) + 1)), (
        f"{name}.lua binds KEYS out of order: {bound.keys}"
    )
    assert [local for _, local in bound.keys] == [lua_name(field) for field in fields], (
        f"{name}: the script binds {[local for _, local in bound.keys]}, "
        f"the wrapper passes {type(step.keys).__name__}{fields}"
    )
    header = {int(n): local for n, local in _HEADER_KEY.findall(bound.header)}
    assert header == dict(bound.keys), f"{name}.lua: the header names the keys {header}"


@pytest.mark.parametrize("name", names())
def test_binding_block_names_the_arguments_the_header_declares(name: str) -> None:
    bound = Bindings(name)
    assert [n for n, _ in bound.args] == list(range(1, len(bound.args) + 1)), (
        f"{name}.lua binds ARGV out of order: {bound.args}"
    )
    header = {int(n): local for n, local in _HEADER_ARG.findall(bound.header)}
    assert header == dict(bound.args), f"{name}.lua: the header names the arguments {header}"
    for start, at in bound.starts.items():
        assert f"{start} ({at})" in bound.header, f"{name}.lua: the header must say where {start} is"


# Strings and comments hide nothing from the index check, and say nothing to it.
_STRIP = re.compile(r"--\[(=*)\[.*?\]\1\]|--[^\n]*|'(?:\\.|[^'\\\n])*'|\"(?:\\.|[^\"\\\n])*\"", re.DOTALL)
_TOKEN = re.compile(r"\w+|\S")
_OPENS = {"function", "if", "do", "repeat"}
_CLOSES = {"end", "until"}


def stray_indexes(body: str, starts: set[str], argc: set[str]) -> list[str]:
    """Every use of KEYS, and every index into ARGV, that a body may not make.

    The one exception is the variable-length tail of ARGV (a batch of jobs, ids or states):
    inside a loop ``for v = <start>, #ARGV[, step] do`` whose start is a name bound in the
    binding block, or ``while v <= <#ARGV or its name> do``, ``ARGV[v]`` and ``ARGV[v + n]``
    (n a number) may be read. Passing ARGV itself to a helper (``create_job``) is no index.
    """
    tokens = _TOKEN.findall(_STRIP.sub(" ", body))
    stack: list[str | None] = []  # per open block: the tail's loop variable, if it is such a loop
    stray: list[str] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token in ("for", "while"):
            end = tokens.index("do", i)
            head = tokens[i + 1 : end]
            bound = ("#" in head and "ARGV" in head) or any(t in argc for t in head)
            named_start = token == "while" or (len(head) > 2 and head[1] == "=" and head[2] in starts)
            stack.append(head[0] if bound and named_start else None)
            i = end + 1
            continue
        if token in _OPENS:
            stack.append(None)
        elif token in _CLOSES:
            stack.pop()
        elif token == "KEYS":
            stray.append(" ".join(tokens[i : i + 4]))
        elif token == "ARGV" and tokens[i + 1 : i + 2] == ["["]:
            close = tokens.index("]", i)
            index = tokens[i + 2 : close]
            tail = index[:1] and index[0] in stack
            if not tail or not (
                len(index) == 1 or (len(index) == 3 and index[1] == "+" and index[2].isdigit())
            ):
                stray.append(" ".join(tokens[i : close + 1]))
        i += 1
    return stray


@pytest.mark.parametrize("name", names())
def test_no_keys_or_argv_index_outside_the_binding_block(name: str) -> None:
    bound = Bindings(name)
    stray = stray_indexes(bound.body, set(bound.starts), bound.argc)
    assert stray == [], f"{name}.lua indexes KEYS or ARGV outside its binding block: {stray}"


@pytest.mark.parametrize("include", ["common", "jobs"])
def test_helpers_take_what_they_need_as_parameters(include: str) -> None:
    code = _STRIP.sub(" ", _raw(f"include/{include}.lua"))
    assert not {"KEYS", "ARGV"} & set(_TOKEN.findall(code)), f"include/{include}.lua reads KEYS or ARGV"


def test_the_index_check_sees_what_it_must() -> None:
    tail = "for i = first, #ARGV, 2 do\n  local id, token = ARGV[i], ARGV[i + 1]\nend\n"
    assert stray_indexes(tail, {"first"}, set()) == []
    assert stray_indexes("while i <= argc do\n  f(ARGV[i + 3])\nend\n", set(), {"argc"}) == []
    assert stray_indexes("local x = ARGV[3] -- ARGV[4]\n", set(), set()) == ["ARGV [ 3 ]"]
    assert stray_indexes("call(KEYS[13] .. 'ring')\n", set(), set()) == ["KEYS [ 13 ]"]
    assert stray_indexes("for i = 3, #ARGV do f(ARGV[i]) end\n", set(), set()) == ["ARGV [ i ]"]
    assert stray_indexes(tail + "f(ARGV[i])\n", {"first"}, set()) == ["ARGV [ i ]"]
    assert stray_indexes("for i = 1, #ids do f(ARGV[i]) end\n", set(), set()) == ["ARGV [ i ]"]
    assert stray_indexes(tail.replace("i + 1", "i * 2"), {"first"}, set()) == ["ARGV [ i * 2 ]"]


@pytest.mark.parametrize("name", names())
def test_every_constant_and_helper_a_script_uses_is_defined_in_it(name: str) -> None:
    """Redis refuses a global at run time only, on the path that reaches it: an include that
    lost a constant fails in production on a rare path (a retry with history on, say)."""
    source = load(name).source
    code = re.sub(r"'[^']*'|\"[^\"]*\"", "''", re.sub(r"--.*", "", source))  # no comments, no strings
    defined = set(re.findall(r"^\s*local ([A-Z][A-Z0-9_]*) =", source, re.MULTILINE))
    used = set(re.findall(r"\b([A-Z][A-Z0-9_]{2,})\b", code)) - {"KEYS", "ARGV"}
    assert used <= defined, f"{name}.lua uses {sorted(used - defined)} without defining them"
    functions = set(re.findall(r"^\s*local (?:function )?(\w+)", source, re.MULTILINE))
    called = set(re.findall(r"(?<![\w.:])([a-z_][a-z0-9_]*)\(", re.sub(r"--.*", "", source)))
    lua = {
        "tonumber",
        "tostring",
        "type",
        "pcall",
        "unpack",
        "ipairs",
        "pairs",
        "error",
        "assert",
        "select",
        "function",
    }
    assert called - lua <= functions, f"{name}.lua calls {sorted(called - lua - functions)}, defined nowhere"
