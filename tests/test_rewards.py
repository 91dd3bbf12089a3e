"""Stage-3 rewards against hand-computed values (DESIGN.md sec. 4)."""

import math

import pytest

from lasar_trl.rewards import exact_match, prefix_match, ranking

A, B, C = ("a1", "b2", "c3", "d0"), ("a1", "b2", "c4", "d0"), ("a9", "b2", "c3", "d0")


def test_exact_and_prefix_match_by_hand():
    assert exact_match(A, A) == 1.0 and exact_match(B, A) == 0.0
    assert prefix_match(A, A) == 1.0
    assert prefix_match(B, A) == 0.5  # a1 b2 shared, then c4 != c3
    assert prefix_match(C, A) == 0.0  # later matches do not count after the first miss
    assert prefix_match([7, 8, 9], [7, 8, 1]) == pytest.approx(2 / 3)  # token ids work too


def test_ranking_by_hand_with_shared_ranks():
    # log-probs rank B (1), A (2), A (3), C (4); both A rollouts share rank 2
    rewards = ranking([A, B, A, C], [-1.0, -0.5, -2.0, -3.0], target=B)
    norm = 1 + 1 / math.log2(3) + 1 / math.log2(4) + 1 / math.log2(5)  # 2.56161
    assert norm == pytest.approx(2.56161, abs=1e-5)
    assert rewards == pytest.approx([-0.63093 / norm, 0.0, -0.63093 / norm, -0.43068 / norm], abs=1e-5)
    assert rewards[0] == pytest.approx(-0.24630, abs=1e-5)


def test_ranking_is_zero_when_the_target_is_missing_or_everyone_is_right():
    assert ranking([A, C], [-1.0, -2.0], target=B) == [0.0, 0.0]
    assert ranking([B, B, B], [-1.0, -2.0, -3.0], target=B) == [0.0, 0.0, 0.0]


def test_ranking_punishes_confident_mistakes_most_and_needs_a_logprob_per_rollout():
    rewards = ranking([A, C, B], [-0.1, -5.0, -1.0], target=B)
    assert rewards[0] < rewards[1] < rewards[2] == 0.0
    with pytest.raises(ValueError, match="2 SIDs but 1 log-probs"):
        ranking([A, B], [-1.0], target=B)
