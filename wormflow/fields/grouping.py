"""Grouping an imager's per-channel files into fields.

High-content imagers write one greyscale file per channel per field, e.g.
``<plate>_<date>_<WELL>_w1_<GUID>.tif`` (fluorescence) and ``..._w2_...``
(brightfield).  A :class:`FieldPattern` is a regular expression, applied with
``fullmatch`` to a file's *name* (the last ``/``-separated component of its
relative path), with the named groups

* ``field`` (required): what the channel files of one field share;
* ``channel`` (required): the channel name, e.g. ``w1``;
* ``well`` (optional): the well id; without it the field id is the well.

Files in different directories never share a field: a field's id is its
directory joined with the ``field`` group.

:func:`group_fields` puts every input path in exactly one place: a complete
:class:`Field`; ``singles`` (names the pattern does not match; scored on their
own, as single images); or ``problems`` ``(relpath, reason)``.  A group is
*broken*, and every one of its files becomes a problem carrying all of the
group's reasons, when a required channel is missing, a channel has two or more
files, a channel is not in the channel map, or its files disagree on the well.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

DEFAULT_FIELD_REGEX = r"^(?P<field>.*_(?P<well>[A-P][0-9]{2}))_(?P<channel>w[0-9]+)_.*\.tiff?$"


@dataclass(frozen=True)
class FieldPattern:
    """A file-name pattern with the named groups ``field``, ``channel`` and optionally ``well``."""

    regex: str = DEFAULT_FIELD_REGEX
    _compiled: re.Pattern = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        try:
            compiled = re.compile(self.regex)
        except re.error as e:
            raise ValueError(f"field pattern {self.regex!r} is not a valid regular expression: {e}") from None
        missing = {"field", "channel"} - set(compiled.groupindex)
        if missing:
            raise ValueError(f"field pattern {self.regex!r} lacks the named group(s) {', '.join(sorted(missing))}")
        object.__setattr__(self, "_compiled", compiled)

    def match(self, relpath: str) -> tuple[str, str, str] | None:
        """``(field id, well, channel)`` for a ``/``-separated relative path, or ``None`` when the name does not match.

        The field id is ``<directory>/<field group>`` (just the group at the top level); the well is the
        ``well`` group, or the field id when the pattern has none.  Empty groups do not match.
        """
        directory, _, name = relpath.rpartition("/")
        m = self._compiled.fullmatch(name)  # fullmatch: a trailing newline cannot slip past ``$``
        if m is None or not m.group("field") or not m.group("channel"):
            return None
        fid = f"{directory}/{m.group('field')}" if directory else m.group("field")
        well = m.group("well") if "well" in self._compiled.groupindex and m.group("well") else fid
        return fid, well, m.group("channel")


@dataclass
class Field:
    """One complete field: its id, well and ``{channel: relpath}``."""

    id: str
    well: str
    channels: dict[str, str]


@dataclass
class Grouping:
    """The result of :func:`group_fields`; every input path is in exactly one of the three lists."""

    fields: list[Field]
    singles: list[str]
    problems: list[tuple[str, str]]


def group_fields(
    relpaths: Iterable[str], pattern: FieldPattern | None = None, channels: Iterable[str] = ("w1", "w2")
) -> Grouping:
    """Group ``relpaths`` into fields of exactly the ``channels`` (e.g. the values of the channel map).

    Fields are sorted by id; singles keep the input order; problems are listed group by group
    (groups sorted by id), each group's files in input order.  An input listed twice counts as two
    files (so its channel has two files and the group is broken).
    """
    pattern = pattern or FieldPattern()
    required = list(dict.fromkeys(channels))
    if not required:
        raise ValueError("group_fields needs at least one channel")
    singles: list[str] = []
    groups: dict[str, list[tuple[str, str, str]]] = {}
    for p in relpaths:
        p = os.fspath(p)
        m = pattern.match(p)
        if m is None:
            singles.append(p)
        else:
            fid, well, channel = m
            groups.setdefault(fid, []).append((p, well, channel))
    fields, problems = [], []
    for fid in sorted(groups):
        files = groups[fid]
        by_channel: dict[str, list[str]] = {}
        for p, _, channel in files:
            by_channel.setdefault(channel, []).append(p)
        reasons = [f"channel {c} missing" for c in required if c not in by_channel]
        reasons += [f"{len(ps)} files for channel {c}" for c, ps in sorted(by_channel.items()) if len(ps) > 1]
        reasons += [
            f"channel {c} not in the channel map ({', '.join(required)})" for c in sorted(by_channel) if c not in required
        ]
        wells = sorted({w for _, w, _ in files})
        if len(wells) > 1:
            reasons.append(f"files disagree on the well ({', '.join(wells)})")
        if reasons:
            reason = f"field {fid}: " + "; ".join(reasons)
            problems += [(p, reason) for p, _, _ in files]
        else:
            fields.append(Field(fid, wells[0], {c: by_channel[c][0] for c in required}))
    return Grouping(fields, singles, problems)
