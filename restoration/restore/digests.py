"""A compact set of strings for the driver's bookkeeping over millions of inputs.

A Python ``set`` of URIs costs about 100 bytes per entry (the string object and its hash-table
slot); a :class:`DigestSet` keeps a 16-byte BLAKE2b digest per entry in sorted NumPy arrays.
Two different strings share a digest with probability about ``n**2 / 2**129`` (1e-27 for a
million entries), so membership is exact for any collection this project will meet.

Used where a run must remember every input without holding it: duplicate entries of an input
list, output locations already claimed, and the sources already written when the manifest is
compacted.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np

__all__ = ["DigestSet", "digest"]

_DTYPE = np.dtype("S16")
_MERGE_AT = 65_536  # pending digests merged into the sorted array at this many


def digest(text: str) -> bytes:
    """The 16-byte BLAKE2b digest of ``text`` (UTF-8)."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class DigestSet:
    """A set of strings stored as 16-byte digests: ``add``, ``in`` and ``len``; 16 bytes per
    entry once merged (new entries wait in a small Python set until :data:`_MERGE_AT`)."""

    def __init__(self, items: Iterable[str] = ()) -> None:
        self._sorted = np.empty(0, dtype=_DTYPE)
        self._pending: set[bytes] = set()
        for item in items:
            self.add(item)

    def __len__(self) -> int:
        return len(self._sorted) + len(self._pending)

    def __contains__(self, item: str) -> bool:
        return self._has(digest(item))

    def _has(self, key: bytes) -> bool:
        if key in self._pending:
            return True
        probe = np.array([key], dtype=_DTYPE)  # compared as arrays: NumPy drops trailing NUL bytes of items
        index = int(np.searchsorted(self._sorted, probe)[0])
        return index < len(self._sorted) and bool(self._sorted[index : index + 1] == probe)

    def add(self, item: str) -> bool:
        """Add ``item``; True if it was not there before."""
        key = digest(item)
        if self._has(key):
            return False
        self._pending.add(key)
        if len(self._pending) >= _MERGE_AT:
            self._merge()
        return True

    def _merge(self) -> None:
        if self._pending:
            self._sorted = np.sort(np.concatenate([self._sorted, np.array(list(self._pending), dtype=_DTYPE)]))
            self._pending = set()

    def add_many(self, items: list[str]) -> np.ndarray:
        """Add every item; a bool array, True where the item was not there before (the first of
        repeated items counts as new)."""
        self._merge()
        keys = np.array([digest(item) for item in items], dtype=_DTYPE)
        if len(keys) == 0:
            return np.zeros(0, dtype=bool)
        present = np.zeros(len(keys), dtype=bool)
        if len(self._sorted):
            positions = np.minimum(np.searchsorted(self._sorted, keys), len(self._sorted) - 1)
            present = self._sorted[positions] == keys
        first = np.zeros(len(keys), dtype=bool)
        first[np.unique(keys, return_index=True)[1]] = True
        new = first & ~present
        self._sorted = np.sort(np.concatenate([self._sorted, keys[new]]))
        return new

    @property
    def nbytes(self) -> int:
        """Bytes held by the merged digests (pending ones aside)."""
        return int(self._sorted.nbytes)
