"""IdentityMemo: a result per object, found by identity, bounded."""

from __future__ import annotations

from xds_server.model.identity import IdentityMemo


def test_computed_once_per_object_and_not_shared_between_equal_objects() -> None:
    calls: list[list[int]] = []

    def total(values: list[int]) -> int:
        calls.append(values)
        return sum(values)

    memo: IdentityMemo[list[int], int] = IdentityMemo(total)
    first, equal = [1, 2], [1, 2]
    assert memo(first) == 3 and memo(first) == 3
    assert memo(equal) == 3
    assert [c is first for c in calls] == [True, False]


def test_full_memo_starts_afresh_and_clear_forgets() -> None:
    calls: list[object] = []

    def compute(key: object) -> int:
        calls.append(key)
        return len(calls)

    memo: IdentityMemo[object, int] = IdentityMemo(compute, limit=2)
    a, b, c = object(), object(), object()
    memo(a), memo(b)
    memo(c)  # the memo was full: it starts afresh with c
    memo(c)
    assert calls == [a, b, c]
    memo(a)
    assert calls == [a, b, c, a]
    memo.clear()
    memo(a)
    assert calls == [a, b, c, a, a]
