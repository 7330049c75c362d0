"""Make any text storable: decoded, free of NUL bytes, and cut to a cap with a visible marker.

Arguments, results and tracebacks come from user code and may be anything: bytes that are not
UTF-8, strings with lone surrogates (which no UTF-8 encoder accepts), NUL characters (which
PostgreSQL's ``text`` refuses), or megabytes of traceback. None of these may crash an archiver,
so every text field goes through :func:`clean` before it is stored. Invalid bytes and NULs are
kept visibly as ``\\xNN`` escapes rather than dropped, so what was odd about the input stays
readable in the history.
"""

from __future__ import annotations

from .records import Text

CUT_MARKER = "…[cut: {total} bytes in all]"
"""Appended to a text that was cut; the stored text, marker included, fits in the cap."""


def _decode(value: Text | object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        try:
            return raw.decode()
        except UnicodeDecodeError:
            return raw.decode("utf-8", "backslashreplace")
    return str(value)


def _encode(text: str) -> tuple[str, bytes]:
    """The text and its UTF-8 bytes; lone surrogates become ``\\udXXX`` escapes."""
    try:
        return text, text.encode()
    except UnicodeEncodeError:
        data = text.encode("utf-8", "backslashreplace")
        return data.decode(), data


def _cut(data: bytes, cap: int) -> str:
    marker = CUT_MARKER.format(total=len(data))
    keep = max(0, cap - len(marker.encode()))
    # errors="ignore" only drops the character the cut went through: the input is valid UTF-8.
    return data[:keep].decode("utf-8", "ignore") + marker


def clean(value: Text | object | None, cap: int) -> tuple[str | None, bool]:
    """``value`` as storable text of at most ``cap`` UTF-8 bytes, and whether it was cut."""
    if value is None:
        return None, False
    text = _decode(value)
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    if text.isascii():
        # The common case: one byte a character, nothing to encode.
        if len(text) <= cap:
            return text, False
        return _cut(text.encode("ascii"), cap), True
    text, data = _encode(text)
    if len(data) <= cap:
        return text, False
    return _cut(data, cap), True
