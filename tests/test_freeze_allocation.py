"""FFDAPT "paper" freeze allocation: hand-worked cases and validation."""
from __future__ import annotations

import pytest

from fdapt_core.errors import ConfigError
from fdapt_core.freeze.allocation import bottom_allocation, paper_allocation


@pytest.mark.parametrize(
    ("n_batches", "expected"),
    [
        # 8 equal: 6/8 = 0.75 -> 1 each; starts 0..7 mod 6.
        ([10] * 8, [[0], [1], [2], [3], [4], [5], [0], [1]]),
        # 2 equal: 6/2 = 3 each.
        ([7, 7], [[0, 1, 2], [3, 4, 5]]),
        # 4 equal: 6/4 = 1.5 -> round half to even = 2; the fourth client wraps to 0.
        ([3] * 4, [[0, 1], [2, 3], [4, 5], [0, 1]]),
        # 12 equal: 6/12 = 0.5 -> round half to even = 0 -> clamped up to 1.
        ([1] * 12, [[i % 6] for i in range(12)]),
        # 6*[5,3,2]/10 = 3.0, 1.8, 1.2 -> 3, 2, 1.
        ([5, 3, 2], [[0, 1, 2], [3, 4], [5]]),
        # Quantity skew n_i = i+1 (sum 36): 6*(i+1)/36 <= 1.33 -> all 1 (0.5 and 0.33 clamp up).
        (list(range(1, 9)), [[0], [1], [2], [3], [4], [5], [0], [1]]),
        # 6*[5,5,2,8]/20 = 1.5, 1.5, 0.6, 2.4 -> 2, 2, 1, 2; starts 0, 2, 4, 5 -> last wraps.
        ([5, 5, 2, 8], [[0, 1], [2, 3], [4], [5, 0]]),
        # One client with everything: round(6.0) = 6 -> clamped down to 4.
        ([42], [[0, 1, 2, 3]]),
    ],
)
def test_paper_allocation_worked_cases(n_batches: list[int], expected: list[list[int]]) -> None:
    assert paper_allocation(n_batches) == expected


def test_paper_allocation_half_rounds_to_even_not_up() -> None:
    # 6 * 5 / 12 = 2.5 -> 2 (not 3); 6 * 7 / 12 = 3.5 -> 4.
    assert paper_allocation([5, 7]) == [[0, 1], [2, 3, 4, 5]]


def test_paper_allocation_other_block_counts_and_bounds() -> None:
    assert paper_allocation([1, 1], n_blocks=12, min_blocks=0, max_blocks=12) == [
        list(range(6)),
        list(range(6, 12)),
    ]
    assert paper_allocation([1, 99], min_blocks=0) == [[], [0, 1, 2, 3]]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_batches": []}, "n_batches is empty"),
        ({"n_batches": [4, 0, 2]}, "client 1 has 0"),
        ({"n_batches": [4, -3]}, "client 1 has -3"),
        ({"n_batches": [4], "n_blocks": 0, "max_blocks": 0, "min_blocks": 0}, "n_blocks >= 1"),
        ({"n_batches": [4], "min_blocks": 3, "max_blocks": 2}, r"\(3\) must not exceed.*\(2\)"),
        ({"n_batches": [4], "max_blocks": 7}, r"max_blocks \(7\).*n_blocks \(6\)"),
        ({"n_batches": [4], "min_blocks": -1}, "min_blocks must be >= 0, got -1"),
    ],
)
def test_paper_allocation_validation(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        paper_allocation(**kwargs)


def test_bottom_allocation() -> None:
    assert bottom_allocation(3, 2, 6) == [[0, 1], [0, 1], [0, 1]]
    assert bottom_allocation(2, 0, 6) == [[], []]
    assert bottom_allocation(1, 6, 6) == [[0, 1, 2, 3, 4, 5]]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((2, 7, 6), r"\[0, 6\], got 7"),
        ((2, -1, 6), r"\[0, 6\], got -1"),
        ((0, 1, 6), "n_clients=0"),
        ((2, 0, 0), "n_blocks >= 1, got 0"),
    ],
)
def test_bottom_allocation_validation(args: tuple[int, int, int], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        bottom_allocation(*args)
