"""A MkDocs hook: the reStructuredText roles of Conveyor's docstrings, made plain in the API reference.

The docstrings are written for reading in the source and in ``help()``: they name other
objects as ``:class:`~conveyor.Client``` and open examples with ``::``. mkdocstrings renders
them as Markdown, where the role would show as text before the code; this keeps the code
(the last dotted part for a ``~`` name), drops a lone ``::`` and makes a paragraph's closing
``text::`` read ``text:``, as reStructuredText itself would.
"""

from __future__ import annotations

import re
from typing import Any

_ROLE = re.compile(r":(?:class|func|meth|mod|attr|exc|data|obj):<code>(~?)([^<]*)</code>")
_LITERAL_MARKER = re.compile(r"<p>::</p>\s*")
_CLOSING_MARKER = re.compile(r"(?<=\S)::</p>")


def _plain(match: re.Match[str]) -> str:
    short, name = match.group(1), match.group(2)
    return f"<code>{name.rsplit('.', 1)[-1] if short else name}</code>"


def on_page_content(html: str, **_: Any) -> str:
    html = _ROLE.sub(_plain, html)
    html = _LITERAL_MARKER.sub("", html)
    return _CLOSING_MARKER.sub(":</p>", html)
