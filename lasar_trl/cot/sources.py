"""Where a run's chains of thought come from (`cot_source`): the offline metadata writer, a CoT
file, or a teacher (Hugging Face model or OpenAI-compatible endpoint) whose answers are cached."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from accelerate import PartialState

from ..configs import CotArguments
from ..data.schema import DataFormatError, RecData, Window
from ..sid.sid_map import SidMap
from ..tasks import history_prompt
from .dataset import history_text, metadata_rationales
from .teacher import HFTeacher, OpenAITeacher, generate_cached, rationale_request


def read_cot_file(path: str, prompts: Sequence[str]) -> list[str]:
    """CoTs from JSON lines `{"prompt": ..., "cot": ...}`, looked up by prompt; every
    prompt must have one."""
    by_prompt = {}
    with open(path) as f:
        for line_number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                by_prompt[row["prompt"]] = row["cot"]
            except (json.JSONDecodeError, KeyError, TypeError) as error:
                expected = '{"prompt": ..., "cot": ...}'
                raise DataFormatError(f"{path} line {line_number}: expected {expected} ({error})") from None
    missing = [p for p in prompts if p not in by_prompt]
    if missing:
        raise DataFormatError(f"{path} has no CoT for {len(missing)} of {len(prompts)} prompts, e.g. {missing[0]!r}")
    return [by_prompt[p] for p in prompts]


def rationales(
    cot_args: CotArguments,
    data: RecData,
    sid_map: SidMap,
    windows: Sequence[Window],
    cache_dir: str,
    state: PartialState | None = None,
    template: str = "english",
) -> list[str]:
    """One CoT per window from the configured source; teacher answers are cached in
    `cache_dir/teacher.jsonl`, so an interrupted run resumes where it stopped. A CoT file is
    keyed by the prompts of the model's `template`. With `state`
    (every process calling), each process asks the teacher its share of the windows, an HF
    teacher on that process's device."""
    if cot_args.cot_source == "metadata":
        return metadata_rationales(data, sid_map, windows)
    if cot_args.cot_source == "file":
        return read_cot_file(cot_args.cot_file, [history_prompt(w.history, sid_map, template) for w in windows])
    if cot_args.cot_source == "hf":
        from transformers import AutoModelForCausalLM, AutoTokenizer

        teacher = HFTeacher(
            AutoModelForCausalLM.from_pretrained(cot_args.teacher_model, dtype="auto").to(
                (state or PartialState()).device
            ),
            AutoTokenizer.from_pretrained(cot_args.teacher_model),
            max_new_tokens=cot_args.teacher_max_new_tokens,
        )
    else:
        teacher = OpenAITeacher(
            cot_args.teacher_base_url,
            cot_args.teacher_model,
            api_key_env=cot_args.teacher_api_key_env,
            concurrency=cot_args.teacher_concurrency,
            max_tokens=cot_args.teacher_max_new_tokens,
        )
    requests = [rationale_request(history_text(w.history, data, sid_map)) for w in windows]
    os.makedirs(cache_dir, exist_ok=True)
    return generate_cached(teacher, requests, os.path.join(cache_dir, "teacher.jsonl"), show_progress=True, state=state)
