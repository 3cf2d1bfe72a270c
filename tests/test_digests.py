"""restoration.restore.digests: the driver's compact string set."""

from __future__ import annotations

import numpy as np
import pytest

from restoration.restore import digests
from restoration.restore.digests import DigestSet, digest


def test_membership_before_and_after_merging(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(digests, "_MERGE_AT", 64)  # several merges within the test
    items = [f"s3://bucket/photos/{index:06d}.jpg" for index in range(1000)]
    found = DigestSet()
    assert all(found.add(item) for item in items)
    assert not any(found.add(item) for item in items)
    assert len(found) == 1000 and found.nbytes >= 16 * 900  # most are merged into the array
    assert all(item in found for item in items)
    assert not any(f"s3://bucket/photos/{index:06d}.png" in found for index in range(1000))


def test_digests_ending_in_zero_bytes_are_still_found() -> None:
    # NumPy's fixed-width bytes drop trailing NUL bytes when an item is read back; membership
    # must not depend on that.
    endings = [text for text in (f"w{index}" for index in range(100_000)) if digest(text).endswith(b"\0")][:4]
    assert len(endings) == 4
    found = DigestSet(endings)
    found._merge()
    assert all(text in found for text in endings) and "w-none" not in found


def test_add_many_marks_new_items_and_the_first_of_repeats() -> None:
    found = DigestSet(["a", "b"])
    new = found.add_many(["b", "c", "c", "d", "a"])
    np.testing.assert_array_equal(new, [False, True, False, True, False])
    assert len(found) == 4 and all(text in found for text in "abcd")
    assert found.add_many([]).shape == (0,)
