"""Text that a caller controls (a provider's name, an event's ID, headers, a body), made safe
to show on a terminal: what a terminal would act on rather than show is written as an escape.

That is the C0 and C1 controls (ESC starts a sequence that can clear the screen, set the
window's title or hide a link), DEL, the Unicode line and paragraph separators, and the
bidirectional controls, which make ``evil\\u202egnp.exe`` read as ``evilexe.png``.
"""

from __future__ import annotations

__all__ = ["SHOWN_AS_ESCAPES", "printable"]

import re

# Besides the C0 controls: what JSON leaves raw but a terminal acts on.
SHOWN_AS_ESCAPES = "\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2028\u2029\u2066-\u2069"
_CONTROL = re.compile(f"[\x00-\x1f{SHOWN_AS_ESCAPES}]")
_CONTROL_BUT_LAYOUT = re.compile(f"[\x00-\x08\x0b-\x1f{SHOWN_AS_ESCAPES}]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group(0))
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str, *, keep_layout: bool = False) -> str:
    """``text`` with every control character written as ``\\xNN`` or ``\\uNNNN``; with
    ``keep_layout``, line feeds and tabs stay (a traceback, an indented body)."""
    if text.isascii() and text.isprintable():
        return text
    control = _CONTROL_BUT_LAYOUT if keep_layout else _CONTROL
    return control.sub(_escape, text)
