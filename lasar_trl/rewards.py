"""Stage-3 rewards: pure functions of SIDs, and the TRL reward callables built on them.

A SID is any sequence of tokens (ids or strings); a rollout's SID is compared with the
target item's SID. The module-level rewards `ranking`, `exact_match` and `prefix_match`
are TRL reward callables not yet bound to a SID map: `LasarGRPOTrainer` binds them (given
as these objects, their names in `REWARDS`, or their classes) to its own SID map and
tokenizer. So a config names them (`reward_funcs: [ranking, exact_match]`) and TRL's
grpo.py takes their dotted paths (`--reward_funcs lasar_trl.rewards.exact_match`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Hashable, Sequence

from accelerate import PartialState
from accelerate.utils import gather_object
from transformers import PreTrainedTokenizerBase

from .sid.sid_map import SidMap

Sid = Sequence[Hashable]


def exact_match_score(sid: Sid, target: Sid) -> float:
    """1 if the generated SID is the target's, else 0."""
    return float(tuple(sid) == tuple(target))


def prefix_match_score(sid: Sid, target: Sid) -> float:
    """Leading tokens shared with the target over the SID length L (disambiguation token
    included), so an exact match scores 1."""
    shared = 0
    for generated, wanted in zip(sid, target):
        if generated != wanted:
            break
        shared += 1
    return shared / len(target)


def ranking_scores(group_sids: Sequence[Sid], group_logprobs: Sequence[float], target: Sid) -> list[float]:
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
    SID of the row's `target` item (a dataset column). Built without a SID map and tokenizer
    it is unbound: it names a reward that `LasarGRPOTrainer` binds to the run's own.
    Subclasses define `name` and `score`."""

    name = "sid_reward"

    def __init__(self, sid_map: SidMap | None = None, tokenizer: PreTrainedTokenizerBase | None = None):
        if (sid_map is None) != (tokenizer is None):
            raise ValueError(f"{type(self).__name__} takes a SID map and a tokenizer, or neither (unbound)")
        self.__name__ = self.name  # TRL logs rewards under their function's name
        self.sid_length: int | None = None
        self.target_ids: dict[str, tuple[int, ...]] | None = None
        if sid_map is not None:
            self._set_targets(sid_map, tokenizer)

    @property
    def is_bound(self) -> bool:
        return self.target_ids is not None

    def bind(self, sid_map: SidMap, tokenizer: PreTrainedTokenizerBase) -> SidReward:
        """A copy scoring against `sid_map`'s SIDs as `tokenizer` spells them (the module-level
        rewards stay unbound, so every trainer binds its own)."""
        bound = copy.copy(self)
        bound._set_targets(sid_map, tokenizer)
        return bound

    def _set_targets(self, sid_map: SidMap, tokenizer: PreTrainedTokenizerBase) -> None:
        self.sid_length = sid_map.sid_length
        self.target_ids = {
            item: tuple(tokenizer.convert_tokens_to_ids(list(sid_map[item]))) for item in sid_map.item_ids
        }

    def __call__(self, prompts, completions, completion_ids, target, **columns) -> list[float]:
        if not self.is_bound:
            raise RuntimeError(
                f"the {self.name} reward is not bound to a SID map: pass it to LasarGRPOTrainer, which binds it, "
                f"or build {type(self).__name__}(sid_map, tokenizer)"
            )
        sids = [tuple(ids[: self.sid_length]) for ids in completion_ids]
        return self.score(sids, [self.target_ids[item] for item in target], **columns)

    def score(self, sids: list[tuple[int, ...]], targets: list[tuple[int, ...]], **columns) -> list[float]:
        raise NotImplementedError


class ExactMatchReward(SidReward):
    name = "exact_match"

    def score(self, sids, targets, **columns) -> list[float]:
        return [exact_match_score(sid, target) for sid, target in zip(sids, targets)]


class PrefixMatchReward(SidReward):
    name = "prefix_match"

    def score(self, sids, targets, **columns) -> list[float]:
        return [prefix_match_score(sid, target) for sid, target in zip(sids, targets)]


class RankingReward(SidReward):
    """`ranking_scores` over whole groups of consecutive rollouts: the `num_generations`
    column (`LasarGRPOTrainer` passes it), else the group size given here. TRL scores
    rewards per process and a group may span processes, so the rows of every process are
    gathered, scored by group, and each process keeps its own slice."""

    name = "ranking"

    def __init__(
        self,
        sid_map: SidMap | None = None,
        tokenizer: PreTrainedTokenizerBase | None = None,
        num_generations: int | None = None,
    ):
        super().__init__(sid_map, tokenizer)
        self.num_generations = num_generations

    def score(self, sids, targets, sid_logprob, num_generations: int | None = None, **columns) -> list[float]:
        group_size = num_generations[0] if isinstance(num_generations, list) else num_generations
        group_size = group_size or self.num_generations
        if not group_size:
            raise ValueError("the ranking reward needs the group size: a num_generations column or num_generations=")
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
            rewards += ranking_scores(group_sids, [float(x) for x in group_logprobs], group_targets[0])
        if state.num_processes > 1:
            local = len(sids)
            rewards = rewards[state.process_index * local : (state.process_index + 1) * local]
        return rewards


ranking = RankingReward()
exact_match = ExactMatchReward()
prefix_match = PrefixMatchReward()
REWARDS: dict[str, SidReward] = {reward.name: reward for reward in (ranking, exact_match, prefix_match)}
DEFAULT_REWARDS = tuple(REWARDS)


def check_reward_names(names: Sequence[str]) -> None:
    """Fail on a config's `reward_funcs` naming no reward of `REWARDS`."""
    unknown = [name for name in names if name not in REWARDS]
    if unknown:
        raise ValueError(f"reward_funcs: unknown reward {unknown}, known: {list(REWARDS)}")


def unbound_reward(reward):
    """A reward as `LasarGRPOTrainer` hands it to TRL: a name in `REWARDS` or a `SidReward`
    class becomes its unbound reward (the trainer binds it once it has its SID map); anything
    else (a SidReward, any TRL reward callable, a reward model or its id) is kept."""
    if isinstance(reward, str) and reward in REWARDS:
        return REWARDS[reward]
    if isinstance(reward, type) and issubclass(reward, SidReward):
        return reward()
    return reward
