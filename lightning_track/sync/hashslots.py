"""Strings kept as their hashes in flat arrays: a set, or a map to integers, with no str or int object a key.

Why: lt sync's memory stays flat in the number of runs and files; a Python set or dict of 100,000 paths costs
~100 bytes an entry, these 8 (a set) or 16 (a map) at most half full. Two keys of one hash are one key: each
user says why that is safe for it.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator

__all__ = ["HashSlots"]


class HashSlots:
    """Open addressing with linear probing over one array of hashes (0: a free slot), at most half full; with
    ``values``, a parallel array of integers that moves with the hashes."""

    __slots__ = ("mask", "hashes", "values", "count")

    def __init__(self, values: bool = False) -> None:
        self.mask, self.count, self.hashes = 15, 0, array("q", bytes(8 * 16))
        self.values: array[int] | None = array("q", bytes(8 * 16)) if values else None

    def _at(self, h: int) -> int:
        mask, hashes = self.mask, self.hashes
        at = h & mask
        while hashes[at] and hashes[at] != h:
            at = (at + 1) & mask
        return at

    def put(self, key: str, value: int = 0) -> None:
        """Add ``key``; with values, its value is ``value`` (a later put replaces an earlier one)."""
        h = hash(key) or 1
        at = self._at(h)
        if not self.hashes[at]:
            self.hashes[at] = h
            self.count += 1
        if self.values is not None:
            self.values[at] = value
        if self.count * 2 > self.mask + 1:
            self._grow()

    def _grow(self) -> None:
        hashes, values, size = self.hashes, self.values, (self.mask + 1) * 2
        self.mask, self.hashes = size - 1, array("q", bytes(8 * size))
        self.values = None if values is None else array("q", bytes(8 * size))
        for i, h in enumerate(hashes):
            if h:
                at = self._at(h)
                self.hashes[at] = h
                if values is not None:
                    self.values[at] = values[i]

    def __contains__(self, key: str) -> bool:
        h = hash(key) or 1
        return self.hashes[self._at(h)] == h

    def __len__(self) -> int:
        return self.count

    def values_held(self) -> Iterator[int]:
        """The value of each key held (with values), in no order."""
        assert self.values is not None
        for h, value in zip(self.hashes, self.values, strict=True):
            if h:
                yield value
