"""Run by test_rewards in two processes: each holds half of a 12-rollout batch (groups of
4, so the middle group straddles the processes), scores it with RankingReward and writes
its rewards to OUT_DIR/rank{i}.json. With one process it scores the whole batch."""

import json
import random
import sys

import torch
from accelerate import PartialState

from lasar_trl.rewards import RankingReward
from lasar_trl.sid import SidMap
from lasar_trl.stages.common import end_run

GROUP, ROWS = 4, 12


class TokenIds:
    """convert_tokens_to_ids over the SID vocabulary: all RankingReward needs of a tokenizer."""

    def __init__(self, sid_map: SidMap):
        self.ids = {token: i for i, token in enumerate(sid_map.all_tokens())}

    def convert_tokens_to_ids(self, tokens):
        return [self.ids[t] for t in tokens]


def batch(sid_map: SidMap, tokenizer: TokenIds) -> dict[str, list]:
    rng = random.Random(0)
    items = sid_map.item_ids
    targets = [t for t in rng.sample(items, ROWS // GROUP) for _ in range(GROUP)]
    # each group's rollouts: its target once, then random items (some repeated)
    picks = [targets[i] if i % GROUP == 0 else rng.choice(items[:6]) for i in range(ROWS)]
    return {
        "completion_ids": [tokenizer.convert_tokens_to_ids(list(sid_map[item])) for item in picks],
        "target": targets,
        "sid_logprob": [rng.uniform(-5, 0) for _ in range(ROWS)],
    }


if __name__ == "__main__":
    state = PartialState(cpu=True)  # as a Trainer with use_cpu sets it up (gloo); RankingReward shares it
    codes = torch.randint(0, 4, (40, 3), generator=torch.Generator().manual_seed(0))
    sid_map = SidMap.from_codes([str(i) for i in range(40)], codes)
    tokenizer = TokenIds(sid_map)
    columns = batch(sid_map, tokenizer)
    local = ROWS // state.num_processes
    rows = slice(state.process_index * local, (state.process_index + 1) * local)
    mine = {key: values[rows] for key, values in columns.items()}
    rewards = RankingReward(sid_map, tokenizer, GROUP)(prompts=[""] * local, completions=[""] * local, **mine)
    with open(f"{sys.argv[1]}/rank{state.process_index}.json", "w") as f:
        json.dump(rewards, f)
    state.wait_for_everyone()
    end_run()
