"""Stage-3 rewards as pure functions of SIDs (DESIGN.md sec. 4).

A SID is any sequence of tokens (ids or strings); a rollout's SID is compared with the
target item's SID. The TRL reward callables of the GRPO trainer are thin wrappers around
these.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

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
