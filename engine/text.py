"""Text that reaches a terminal or a JSON document: names are data, never control codes.

File names on Linux are bytes: Python hands an undecodable byte to us as a lone surrogate
(``surrogateescape``), which no UTF-8 stream can print. A name may also hold escape codes or
newlines that would erase lines or forge messages. :func:`safe_text` shows every such
character as a visible escape (``\\xff``, ``\\x1b``, ``\\n``), and leaves the rest as is.
"""
from __future__ import annotations

import json
import os
import re
from typing import Any

# C0 and C1 controls, DEL, and the invisible format characters that reorder or hide text
# (bidi overrides and isolates, zero-width joiners): a terminal acts on them.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069\ufeff"
                     "\ud800-\udfff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    ch = match.group()
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}"


def safe_text(value: object) -> str:
    """``str(value)`` with control, format and undecodable characters escaped.

    Examples
    --------
    >>> safe_text("a\\x1b[2Kb\\n")
    'a\\\\x1b[2Kb\\\\n'
    >>> safe_text(os.fsdecode(b"caf\\xe9.wav"))
    'caf\\\\xe9.wav'
    """
    text = value if isinstance(value, str) else os.fspath(value) \
        if isinstance(value, os.PathLike) else str(value)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    return _UNSAFE.sub(_escape, text)


def _has_surrogate(text: str) -> bool:
    return any("\ud800" <= ch <= "\udfff" for ch in text)


def json_text(obj: Any) -> str:
    """Strict JSON (``NaN`` and ``Infinity`` refused with ValueError), printable as UTF-8.

    Names that are not UTF-8 are written with ``\\udcXX`` escapes, which ``json.loads``
    turns back into the same surrogate-escaped ``str`` Python uses for such names, so the
    path still opens the file.
    """
    text = json.dumps(obj, ensure_ascii=False, allow_nan=False)
    if _has_surrogate(text):
        return "".join(ch.encode("ascii", "backslashreplace").decode("ascii")
                       if "\ud800" <= ch <= "\udfff" else ch for ch in text)
    return text

