"""Run by test_anchors in one process or, under torchrun, two (gloo): CoT teaching and anchor
extraction sharded across processes (`state=PartialState()`). Each process writes what it
asked the teacher and every sample's CoT and anchors to OUT_DIR/rank{i}.json; the caches go to
CACHE_DIR, so a rerun can be checked to ask and extract nothing."""

import json
import sys

import torch
from accelerate import PartialState
from testing_utils import make_tiny_model
from transformers import AutoTokenizer

from lasar_trl.cot import anchors as anchors_module
from lasar_trl.cot.anchors import anchors_for_samples
from lasar_trl.cot.segment import split_sentences
from lasar_trl.cot.teacher import generate_cached
from lasar_trl.modeling.loading import EMBEDDED_MODEL, resolve_model_path
from lasar_trl.sid import SidMap
from lasar_trl.sid.tokenizer import add_sid_tokens
from lasar_trl.stages.common import end_run
from lasar_trl.tasks import history_prompt

SAMPLES = 7  # odd, and with a repeat: shares of distinct samples are uneven


class EchoTeacher:
    """A deterministic teacher that records what it was asked."""

    identity = "echo"

    def __init__(self):
        self.asked: list[str] = []

    def generate(self, requests: list[str]) -> list[str]:
        self.asked += requests
        return [f"The history is {request}. It ends here! So the next one follows." for request in requests]


if __name__ == "__main__":
    out_dir, cache_dir = sys.argv[1], sys.argv[2]
    state = PartialState(cpu=True)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(EMBEDDED_MODEL))
    codes = torch.randint(0, 4, (40, 3), generator=torch.Generator().manual_seed(0))
    sid_map = SidMap.from_codes([str(i) for i in range(40)], codes)
    model = make_tiny_model(tokenizer)  # seeded: the same weights on every process
    add_sid_tokens(model, tokenizer, sid_map)
    histories = [[str(i), str(i + 1)] for i in range(SAMPLES - 1)] + [["0", "1"]]
    prompts = [history_prompt(history, sid_map) for history in histories]

    teacher = EchoTeacher()
    cots = generate_cached(teacher, [" then ".join(h) for h in histories], f"{cache_dir}/teacher.jsonl", state=state)
    extracted = []
    real_extract = anchors_module.extract_anchors
    anchors_module.extract_anchors = lambda model, tok, prompts, *a, **k: (
        extracted.extend(prompts) or real_extract(model, tok, prompts, *a, **k)
    )
    anchors = anchors_for_samples(
        model,
        tokenizer,
        sid_map,
        prompts,
        cots,
        [split_sentences(c) for c in cots],
        f"{cache_dir}/anchors",
        shard_size=2,
        state=state,
    )
    with open(f"{out_dir}/rank{state.process_index}.json", "w") as f:
        json.dump(
            {"asked": teacher.asked, "extracted": extracted, "cots": cots, "anchors": [a.tolist() for a in anchors]}, f
        )
    end_run()
