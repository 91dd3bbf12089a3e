"""Stage-3 rewards against hand-computed values, their TRL reward callables, and rewards named in configs."""

import json
import math
import os
import subprocess
import sys

import pytest
from testing_utils import free_port, make_tiny_model

from lasar_trl.rewards import (
    REWARDS,
    ExactMatchReward,
    PrefixMatchReward,
    RankingReward,
    check_reward_names,
    exact_match,
    exact_match_score,
    prefix_match_score,
    ranking_scores,
)
from lasar_trl.sid.tokenizer import add_sid_tokens

A, B, C = ("a1", "b2", "c3", "d0"), ("a1", "b2", "c4", "d0"), ("a9", "b2", "c3", "d0")


def test_exact_and_prefix_match_by_hand():
    assert exact_match_score(A, A) == 1.0 and exact_match_score(B, A) == 0.0
    assert prefix_match_score(A, A) == 1.0
    assert prefix_match_score(B, A) == 0.5  # a1 b2 shared, then c4 != c3
    assert prefix_match_score(C, A) == 0.0  # later matches do not count after the first miss
    assert prefix_match_score([7, 8, 9], [7, 8, 1]) == pytest.approx(2 / 3)  # token ids work too


def test_ranking_by_hand_with_shared_ranks():
    # log-probs rank B (1), A (2), A (3), C (4); both A rollouts share rank 2
    rewards = ranking_scores([A, B, A, C], [-1.0, -0.5, -2.0, -3.0], target=B)
    norm = 1 + 1 / math.log2(3) + 1 / math.log2(4) + 1 / math.log2(5)  # 2.56161
    assert norm == pytest.approx(2.56161, abs=1e-5)
    assert rewards == pytest.approx([-0.63093 / norm, 0.0, -0.63093 / norm, -0.43068 / norm], abs=1e-5)
    assert rewards[0] == pytest.approx(-0.24630, abs=1e-5)


def test_ranking_is_zero_when_the_target_is_missing_or_everyone_is_right():
    assert ranking_scores([A, C], [-1.0, -2.0], target=B) == [0.0, 0.0]
    assert ranking_scores([B, B, B], [-1.0, -2.0, -3.0], target=B) == [0.0, 0.0, 0.0]


def test_ranking_punishes_confident_mistakes_most_and_needs_a_logprob_per_rollout():
    rewards = ranking_scores([A, C, B], [-0.1, -5.0, -1.0], target=B)
    assert rewards[0] < rewards[1] < rewards[2] == 0.0
    with pytest.raises(ValueError, match="2 SIDs but 1 log-probs"):
        ranking_scores([A, B], [-1.0], target=B)


def test_reward_callables_score_token_ids_against_the_target_column(smol_tokenizer, tiny_sid_map):
    add_sid_tokens(make_tiny_model(smol_tokenizer), smol_tokenizer, tiny_sid_map)

    def ids(item):
        return smol_tokenizer.convert_tokens_to_ids(list(tiny_sid_map[item]))

    eos = smol_tokenizer.eos_token_id
    first, second = tiny_sid_map.item_ids[:2]
    shared = sum(a == b for a, b in zip(tiny_sid_map[first], tiny_sid_map[second]))  # leading tokens they share
    completion_ids = [ids(first) + [eos], ids(second) + [eos], ids(first) + [eos], ids(second) + [eos]]
    columns = dict(prompts=["p"] * 4, completions=[""] * 4, completion_ids=completion_ids, target=[first] * 4)

    exact = ExactMatchReward(tiny_sid_map, smol_tokenizer)
    assert exact.__name__ == "exact_match" and exact(**columns) == [1.0, 0.0, 1.0, 0.0]
    prefix = PrefixMatchReward(tiny_sid_map, smol_tokenizer)(**columns)
    assert prefix[0] == 1.0 and prefix[1] <= shared / tiny_sid_map.sid_length < 1.0

    rank = RankingReward(tiny_sid_map, smol_tokenizer, num_generations=2)
    rewards = rank(**columns, sid_logprob=[-1.0, -0.5, -0.1, -0.2])
    # groups (rollouts 0, 1) and (2, 3): each has the target once, scored as the pure function does
    assert rewards == ranking_scores([ids(first), ids(second)], [-1.0, -0.5], ids(first)) + ranking_scores(
        [ids(first), ids(second)], [-0.1, -0.2], ids(first)
    )
    assert rewards[1] < 0 and rewards[3] < 0 and rewards[1] < rewards[3]  # confidently wrong costs more
    with pytest.raises(ValueError, match="whole groups"):
        rank(**{**columns, "completion_ids": completion_ids[:3], "target": [first] * 3}, sid_logprob=[-1.0] * 3)


def test_named_rewards_are_unbound_until_bound_and_then_score_as_the_pure_functions(smol_tokenizer, tiny_sid_map):
    add_sid_tokens(make_tiny_model(smol_tokenizer), smol_tokenizer, tiny_sid_map)
    first, second = tiny_sid_map.item_ids[:2]
    target, other = (tuple(smol_tokenizer.convert_tokens_to_ids(list(tiny_sid_map[item]))) for item in (first, second))
    sids, logprobs = [target, other, other, target], [-1.0, -0.5, -0.1, -0.2]
    columns = dict(
        prompts=["p"] * 4,
        completions=[""] * 4,
        completion_ids=[[*sid, smol_tokenizer.eos_token_id] for sid in sids],
        target=[first] * 4,
        sid_logprob=logprobs,
        num_generations=[2] * 4,
    )
    expected = {
        "ranking": ranking_scores(sids[:2], logprobs[:2], target) + ranking_scores(sids[2:], logprobs[2:], target),
        "exact_match": [exact_match_score(sid, target) for sid in sids],
        "prefix_match": [prefix_match_score(sid, target) for sid in sids],
    }
    assert list(REWARDS) == list(expected) and expected["ranking"][1] < 0 and 0 < expected["prefix_match"][1] < 1
    for name, reward in REWARDS.items():
        assert reward.__name__ == name and not reward.is_bound
        with pytest.raises(RuntimeError, match=f"the {name} reward is not bound to a SID map"):
            reward(**columns)
        bound = reward.bind(tiny_sid_map, smol_tokenizer)
        assert bound.__name__ == name and bound(**columns) == expected[name]
        assert not reward.is_bound  # binding copies: the module-level reward stays free for the next trainer
    with pytest.raises(ValueError, match="needs the group size"):
        REWARDS["ranking"].bind(tiny_sid_map, smol_tokenizer)(**{**columns, "num_generations": None})
    with pytest.raises(ValueError, match="a SID map and a tokenizer, or neither"):
        ExactMatchReward(tiny_sid_map)
    assert exact_match is REWARDS["exact_match"]


def test_reward_names_are_checked_against_the_known_ones():
    check_reward_names(["prefix_match", "ranking"])
    with pytest.raises(
        ValueError,
        match=r"reward_funcs: unknown reward \['exact'\], known: \['ranking', 'exact_match', 'prefix_match'\]",
    ):
        check_reward_names(["ranking", "exact"])


@pytest.mark.slow
def test_ranking_sees_whole_groups_when_two_processes_share_a_batch(tmp_path):
    """The middle group's rollouts live on both processes: each process must get the rewards
    that scoring the whole group gives (TRL calls reward functions per process)."""
    worker = os.path.join(os.path.dirname(__file__), "ranking_worker.py")
    env = {**os.environ, "PYTHONPATH": os.path.dirname(__file__), "OMP_NUM_THREADS": "1"}
    single, double = tmp_path / "single", tmp_path / "double"
    single.mkdir(), double.mkdir()
    subprocess.run([sys.executable, worker, str(single)], check=True, env=env, timeout=300)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            str(free_port()),
            worker,
            str(double),
        ],
        check=True,
        env=env,
        timeout=300,
    )
    whole = json.loads((single / "rank0.json").read_text())
    split = json.loads((double / "rank0.json").read_text()) + json.loads((double / "rank1.json").read_text())
    assert len(whole) == 12 and split == whole
    assert any(r < 0 for r in whole[4:8])  # the straddling group has wrong rollouts to rank
