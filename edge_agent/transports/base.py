"""The two seams of the transports: a source of desired-state documents, and a publisher of reports.

Sources hand raw bytes to `deliver` and judge nothing: parsing, signatures and revisions are the
reconciler's, so every transport gets the same checks. A source may deliver the same document many
times (retained messages, polls); the reconciler ignores repeats.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

Deliver = Callable[[bytes, str], None]  # (payload, where it came from)


class DesiredStateSource(Protocol):
    def start(self, deliver: Deliver) -> None:
        """Begin delivering documents (on the source's own thread); return at once."""
        ...

    def stop(self) -> None: ...


class Publisher(Protocol):
    def publish(self, kind: str, payload: bytes, retain: bool = False) -> None:
        """kind: reported, state, events or bench; must not block on the network."""
        ...


__all__ = ["Deliver", "DesiredStateSource", "Publisher"]
