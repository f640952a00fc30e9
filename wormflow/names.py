"""Showing file names as text: bytes that are not valid UTF-8, and invisible characters, as escapes.

POSIX file names are bytes; Python decodes them with ``surrogateescape``, so
a byte that is not valid UTF-8 (say ``\\xe9`` from a Latin-1 system) becomes a
lone surrogate (``\\udce9``) that cannot be written to a UTF-8 report, log or
table.  :func:`display_name` shows such a byte as the four characters
``\\xe9``; control characters (a newline in a name would break a table row) as
``\\xNN`` too, and invisible format characters (such as the right-to-left
override that makes ``x\\u202egnp.exe`` look like ``xexe.png``) as ``\\uNNNN``.
The real name (to open the file) stays what ``os.listdir`` returned; this is
for people only.  Two names can look alike after escaping (a literal
backslash-x in a name): displays are not identifiers.
"""

from __future__ import annotations

import unicodedata

_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def display_name(name: str) -> str:
    """``name`` (a file name or ``/``-separated relative path) as printable text (see module doc)."""
    if name.isprintable():
        return name
    out = []
    for ch in name:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:  # an undecodable byte, surrogate-escaped by os.fsdecode
            out.append(f"\\x{code - 0xDC00:02x}")
        elif unicodedata.category(ch) in _ESCAPED_CATEGORIES:
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
        else:
            out.append(ch)
    return "".join(out)
