"""Stage-3 rewards as pure functions of SIDs.

A SID is any sequence of tokens (ids or strings); a rollout's SID is compared with the
target item's SID. The TRL reward callables of the GRPO trainer are thin wrappers around
these.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

from accelerate import PartialState
from accelerate.utils import gather_object
from transformers import PreTrainedTokenizerBase

from .sid.sid_map import SidMap

Sid = Sequence[Hashable]


def exact_match(sid: Sid, target: Sid) -> float:
    """1 if the generated SID is the target's, else 0."""
    return float(tuple(sid) == tuple(target))


def prefix_match(sid: Sid, target: Sid) -> float:
    """Leading tokens shared with the target over the SID length L (disambiguation token
    included), so an exact match scores 1."""
    shared = 0
    for generated, wanted in zip(sid, target):
        if generated != wanted:
            break
        shared += 1
    return shared / len(target)


def ranking(group_sids: Sequence[Sid], group_logprobs: Sequence[float], target: Sid) -> list[float]:
    """MiniOneRec's ranking reward for one group of G rollouts of the same prompt.

    Rollouts are ranked by SID log-prob, highest first (r = 1..G); rollouts with the same
    SID share the smallest rank among them. With D = sum_{j=1..G} 1 / log2(j + 1): when the
    target is among the group's SIDs, a wrong rollout gets -(1 / log2(r + 1)) / D and a right
    one 0 (confidently wrong costs most); when no rollout found it, every rollout gets 0.
    """
    if len(group_sids) != len(group_logprobs):
        raise ValueError(f"{len(group_sids)} SIDs but {len(group_logprobs)} log-probs in the group")
    sids = [tuple(sid) for sid in group_sids]
    target = tuple(target)
    if target not in sids:
        return [0.0] * len(sids)
    order = sorted(range(len(sids)), key=lambda i: -group_logprobs[i])  # stable: ties keep rollout order
    best_rank: dict[tuple, int] = {}
    for rank, index in enumerate(order, start=1):
        best_rank.setdefault(sids[index], rank)
    norm = sum(1 / math.log2(j + 1) for j in range(1, len(sids) + 1))
    return [0.0 if sid == target else -(1 / math.log2(best_rank[sid] + 1)) / norm for sid in sids]


class SidReward:
    """A TRL reward callable: scores each rollout's first L completion token ids against the
    SID of the row's `target` item (a dataset column). Subclasses define `name` and `score`."""

    name = "sid_reward"

    def __init__(self, sid_map: SidMap, tokenizer: PreTrainedTokenizerBase):
        self.__name__ = self.name  # TRL logs rewards under their function's name
        self.sid_length = sid_map.sid_length
        self.target_ids = {
            item: tuple(tokenizer.convert_tokens_to_ids(list(sid_map[item]))) for item in sid_map.item_ids
        }

    def __call__(self, prompts, completions, completion_ids, target, **columns) -> list[float]:
        sids = [tuple(ids[: self.sid_length]) for ids in completion_ids]
        return self.score(sids, [self.target_ids[item] for item in target], **columns)

    def score(self, sids: list[tuple[int, ...]], targets: list[tuple[int, ...]], **columns) -> list[float]:
        raise NotImplementedError


class ExactMatchReward(SidReward):
    name = "exact_match"

    def score(self, sids, targets, **columns) -> list[float]:
        return [exact_match(sid, target) for sid, target in zip(sids, targets)]


class PrefixMatchReward(SidReward):
    name = "prefix_match"

    def score(self, sids, targets, **columns) -> list[float]:
        return [prefix_match(sid, target) for sid, target in zip(sids, targets)]


class RankingReward(SidReward):
    """`ranking` over whole groups of `num_generations` consecutive rollouts. TRL scores
    rewards per process and a group may span processes, so the rows of every process are
    gathered, scored by group, and each process keeps its own slice."""

    name = "ranking"

    def __init__(self, sid_map: SidMap, tokenizer: PreTrainedTokenizerBase, num_generations: int):
        super().__init__(sid_map, tokenizer)
        self.num_generations = num_generations

    def score(self, sids, targets, sid_logprob, num_generations: int | None = None, **columns) -> list[float]:
        group_size = num_generations[0] if isinstance(num_generations, list) else num_generations
        group_size = group_size or self.num_generations
        state = PartialState()
        rows = list(zip(sids, sid_logprob, targets))
        if state.num_processes > 1:
            rows = gather_object(rows)
        if len(rows) % group_size:
            raise ValueError(f"{len(rows)} rollouts do not form whole groups of num_generations={group_size}")
        rewards = []
        for start in range(0, len(rows), group_size):
            group_sids, group_logprobs, group_targets = zip(*rows[start : start + group_size])
            if len(set(group_targets)) != 1:
                raise ValueError(f"rollouts {start}..{start + group_size - 1} are not one prompt's group")
            rewards += ranking(group_sids, [float(x) for x in group_logprobs], group_targets[0])
        if state.num_processes > 1:
            local = len(sids)
            rewards = rewards[state.process_index * local : (state.process_index + 1) * local]
        return rewards
