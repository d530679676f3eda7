"""RM-Bench accuracy on hand-built score matrices with known hard / normal / easy values."""

import numpy as np
import pytest

from endokernel.hf.accuracy import accuracy_matrix, rmbench_accuracy


def test_matrix_counts_strict_wins_per_style_pair():
    chosen = [[1.0, 2.0, 3.0]]
    rejected = [[0.5, 2.0, 2.5]]  # chosen[1] ties rejected[1]: a tie is no win
    expected = [[1, 0, 0],
                [1, 0, 0],
                [1, 1, 1]]
    np.testing.assert_array_equal(accuracy_matrix(chosen, rejected), expected)


def test_hard_normal_easy_are_upper_diagonal_lower():
    # example 1 wins every comparison; example 2 only those where the chosen style is the fancier (lower
    # triangle); so hard = 1/2, normal = 1/2, easy = 1
    chosen = [[9.0, 9.0, 9.0], [0.0, 1.0, 2.0]]
    rejected = [[0.0, 0.0, 0.0], [0.0, 1.0, 2.0]]
    acc = rmbench_accuracy(chosen, rejected)
    assert acc == pytest.approx({"hard": 0.5, "normal": 0.5, "easy": 1.0, "average": 2.0 / 3})


def test_asymmetric_matrix_separates_the_triangles():
    chosen = [[2.0, 0.0, 0.0]]
    rejected = [[3.0, 1.0, -1.0]]  # wins: (0, 1), (0, 2), (1, 2), (2, 2) -> hard 3/3, normal 1/3, easy 0/3
    acc = rmbench_accuracy(chosen, rejected)
    assert acc == pytest.approx({"hard": 1.0, "normal": 1 / 3, "easy": 0.0, "average": 4 / 9})


def test_minus_infinity_loses_to_any_score_and_ties_itself():
    inf = float("-inf")
    acc = rmbench_accuracy([[inf, inf, inf]], [[inf, -5.0, inf]])
    assert acc == pytest.approx({"hard": 0.0, "normal": 0.0, "easy": 0.0, "average": 0.0})


@pytest.mark.parametrize("chosen, rejected", [([[1, 2]], [[1, 2]]), ([[1, 2, 3]], [[1, 2, 3], [1, 2, 3]]), ([], [])])
def test_bad_shapes_raise(chosen, rejected):
    with pytest.raises(ValueError, match="chosen and rejected"):
        accuracy_matrix(chosen, rejected)
