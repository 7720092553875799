"""Cancels that overtake queued frames: the node side of barge-in, for both executors.

A cancel drops the work in flight downstream of where it was issued — a reply being
synthesized, the audio frames already queued for the player — while frames sent after
it (the user's new utterance) are handled as usual. It is issued by a node
(``ctx.cancel()``, e.g. the VAD when the user starts talking over the agent), by the
session (:meth:`zerohop.session.Session.cancel`), or by a gRPC client's ``CancelSpeculation``.

It travels twice, as the Rust core's ``executor::cancel`` module explains: a *notice*
out of band reaches every node downstream at once (ahead of the frames waiting in its
channels, whatever the nodes between are doing), and a *marker* in band, on every
output of the origin and of each node as it handles the notice, tells each receiver
where the frames it must drop end. :class:`Discards` is the receiver's book, the same
as the Rust one; the runner and the in-process executor keep one per node.

A node learns of a cancel three ways: its ``process`` stops at its next output (the
generator is closed: code after a ``yield`` does not run), ``on_cancel`` is called, and
``ctx.cancelled`` turns true — for work that yields nothing for a while, like a
language model producing tokens for a sentence.

Examples
--------
The book of a node with two inputs, when the notice comes before the marker and when
the marker comes first:

>>> from zerohop.cancel import Discards
>>> book = Discards()
>>> book.notice(7, ["a"])  # new here: the node drops its work
True
>>> book.discarding("a"), book.discarding("b")
(True, False)
>>> book.mark("a", 7)  # the marker: frames after it are kept
False
>>> book.discarding("a")
False
>>> book.mark("b", 8), book.notice(8, ["b"]), book.discarding("b")
(True, False, False)
"""

from __future__ import annotations

import json
import os
from collections import deque
from collections.abc import Hashable, Iterable
from dataclasses import dataclass

from .data import Control

__all__ = ["CancelRequested", "Discards", "Notice", "new_id", "output_frame"]

#: How many handled ids a book remembers (see the Rust module).
_REMEMBERED = 64


class CancelRequested(BaseException):
    """A cancel reached this node while it worked or waited: raised by the executor to
    leave ``process`` (a BaseException, so that node code catching ``Exception`` does
    not swallow it)."""


@dataclass(frozen=True)
class Notice:
    """A cancel as a node hears of it: its id, and the inputs (channel names, or the
    in-process executor's edges) that carry its marker."""

    id: int
    discard: tuple[Hashable, ...]


class Discards:
    """Which inputs drop frames until which markers, and which cancels were handled
    (the Rust ``Discards``, same rules)."""

    def __init__(self) -> None:
        self._until: dict[Hashable, list[int]] = {}
        self._passed: dict[Hashable, deque[int]] = {}
        self._handled: deque[int] = deque(maxlen=_REMEMBERED)

    def notice(self, cancel: int, inputs: Iterable[Hashable]) -> bool:
        """A notice: each input discards until its marker, unless that came already.
        True if the cancel is new here (the node handles it)."""
        for key in inputs:
            passed = self._passed.get(key)
            if passed is not None and cancel in passed:
                passed.remove(cancel)
            elif cancel not in self._until.setdefault(key, []):
                self._until[key].append(cancel)
        return self._first(cancel)

    def mark(self, key: Hashable, cancel: int) -> bool:
        """The marker of ``cancel`` on input ``key``. True if the cancel is new here."""
        until = self._until.get(key)
        if until and cancel in until:
            until.remove(cancel)
        else:
            self._passed.setdefault(key, deque(maxlen=_REMEMBERED)).append(cancel)
        return self._first(cancel)

    def handled(self, cancel: int) -> bool:
        """Whether ``cancel`` was handled here already (its marker may come first)."""
        return cancel in self._handled

    def waiting(self, notices: Iterable[Notice]) -> bool:
        """Whether any of ``notices`` is of a cancel not handled yet."""
        return any(n.id not in self._handled for n in notices)

    def discarding(self, key: Hashable) -> bool:
        """Whether input ``key`` drops its frames now."""
        return bool(self._until.get(key))

    def _first(self, cancel: int) -> bool:
        if cancel in self._handled:
            return False
        self._handled.append(cancel)
        return True


def new_id() -> int:
    """A fresh cancel id: 64 random bits, so an origin asks no one before its markers."""
    return int.from_bytes(os.urandom(8), "little")


def output_frame(cancel: int, source: str) -> Control:
    """What a session's reader gets when a cancel reaches the outputs: a
    ``cancel_speculation`` control frame (``source``: the first output), the cancel's id
    in its metadata. A player stops what it is playing."""
    frame = Control(
        "cancel_speculation", control_metadata=json.dumps({"cancel_id": f"{cancel:016x}"})
    )
    frame.source = source
    return frame
