"""Bad input, table-driven: every case fails early with the documented exception, and its message
names the offending flag, field, file, line or column. Each case builds only tiny files, in-process."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, LlamaConfig
from trl import ModelConfig, SFTConfig, TrlParser

from lasar_trl.configs import CotArguments, RecipeParser, RecScriptArguments
from lasar_trl.cot.sources import read_cot_file
from lasar_trl.data import load_dataset_spec
from lasar_trl.data.schema import DataFormatError
from lasar_trl.modeling.checkpoint import load_recommender
from lasar_trl.modeling.lasar import LasarConfig, attach_lasar, load_lasar, save_lasar, split_lasar_state
from lasar_trl.modeling.loading import EMBEDDED_MODEL, resolve_model_path
from lasar_trl.sid.sid_map import SidMap, SidMapMismatchError, dataset_record
from lasar_trl.stages.build_sids import BuildSidsArguments
from lasar_trl.stages.evaluate import EvaluateArguments
from lasar_trl.stages.main_job import PipelineArguments
from lasar_trl.stages.merge_lora import MergeLoraArguments
from lasar_trl.tasks import check_items_known
from lasar_trl.trainers.lasar_grpo_config import LasarGRPOConfig
from lasar_trl.trainers.lasar_sft_config import LasarSFTConfig

HIDDEN = 16


class Context:
    """What a case may build on: a fresh folder, and the heavier fixtures only when a case asks."""

    def __init__(self, tmp_path: Path, request: pytest.FixtureRequest):
        self.tmp = tmp_path
        self.request = request

    @property
    def recbole(self) -> Path:
        return self.request.getfixturevalue("tiny_recbole_dir")

    def yaml(self, config: dict) -> str:
        path = self.tmp / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        return str(path)

    def file(self, name: str, text: str) -> Path:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path


@dataclass(frozen=True)
class Case:
    id: str
    call: Callable[[Context], object]
    error: type[BaseException]
    names: str  # a regex: what the message must name (flag, field, file, line or column)


def script_args(*argv: str):
    return RecipeParser(RecScriptArguments).parse_args_and_config(list(argv))


def stage1_args(ctx: Context, *argv: str):
    return RecipeParser((RecScriptArguments, SFTConfig, ModelConfig)).parse_args_and_config(
        ["--output_dir", str(ctx.tmp / "out"), "--report_to", "none", *argv]
    )


def build_sids_args(ctx: Context, *argv: str):
    return TrlParser(BuildSidsArguments).parse_args_and_config(
        ["--dataset", "ml-100k", "--output_dir", str(ctx.tmp / "sids"), *argv]
    )


def evaluate_args(ctx: Context, *argv: str, n_max: int | None = None):
    checkpoint = ctx.tmp / "ckpt"
    SidMap({"1": ("<a_0>", "<b_0>")}).save(checkpoint)
    if n_max is not None:
        (checkpoint / "lasar_config.json").write_text(json.dumps(asdict(LasarConfig(hidden_size=8, n_max=n_max))))
    return TrlParser(EvaluateArguments).parse_args_and_config(["--checkpoint", str(checkpoint), *argv])


def tiny_model(hidden_size: int = HIDDEN) -> AutoModelForCausalLM:
    config = LlamaConfig(
        vocab_size=32,
        hidden_size=hidden_size,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    return AutoModelForCausalLM.from_config(config)


def lasar_folder(ctx: Context, hidden_size: int = HIDDEN) -> Path:
    """A folder with only the LASAR files, for a model of `hidden_size`."""
    model = tiny_model(hidden_size)
    lasar = attach_lasar(model, LasarConfig(hidden_size=hidden_size, n_max=4))
    folder = ctx.tmp / "lasar"
    folder.mkdir(exist_ok=True)
    save_lasar(split_lasar_state(model.state_dict())[1], lasar.config, str(folder))
    return folder


def truncated_head(ctx: Context) -> None:
    folder = lasar_folder(ctx)
    head = folder / "lasar_head.safetensors"
    head.write_bytes(head.read_bytes()[: head.stat().st_size // 2])
    load_lasar(tiny_model(), str(folder))


def edited_lasar_config(ctx: Context, text: str) -> None:
    folder = lasar_folder(ctx)
    (folder / "lasar_config.json").write_text(text)
    load_lasar(tiny_model(), str(folder))


def appended_interaction(ctx: Context, row: str) -> None:
    inter = ctx.recbole / "tiny.inter"
    inter.write_text(inter.read_text() + row + "\n")
    load_dataset_spec(f"recbole:{ctx.recbole}")


def other_datasets_map(ctx: Context, recorded: bool) -> None:
    """A map holding every item of the tiny dataset and more, as another dataset's map may."""
    data = load_dataset_spec(f"recbole:{ctx.recbole}")
    items = [*data.catalog, "9001", "9002"]
    codes = torch.arange(len(items) * 2).reshape(len(items), 2) % 7
    sid_map = SidMap.from_codes(items, codes)
    if recorded:
        sid_map.stats.update(dataset_record("other", items))
    sid_map.save(ctx.tmp / "other")
    check_items_known(data, SidMap.load(ctx.tmp / "other"))


def map_missing_an_item(ctx: Context) -> None:
    data = load_dataset_spec(f"recbole:{ctx.recbole}")
    items = sorted(data.catalog)[1:]
    check_items_known(data, SidMap.from_codes(items, torch.zeros(len(items), 1, dtype=torch.long)))


def folder_holding(ctx: Context, name: str) -> None:
    ctx.file(f"sids/{name}", "{}")
    build_sids_args(ctx)


def grpo_dataset_case(change: Callable) -> Callable[[Context], object]:
    """The trainer's construction-time dataset checks (lasar_grpo_trainer.py), through test_grpo's helpers."""

    def call(ctx: Context) -> None:
        from test_grpo import grpo_dataset, make_trainer, save_stage2_checkpoint

        tokenizer = ctx.request.getfixturevalue("smol_tokenizer")
        sid_map = ctx.request.getfixturevalue("tiny_sid_map")
        checkpoint = save_stage2_checkpoint(tokenizer, sid_map, ctx.tmp / "stage2")
        make_trainer(tokenizer, sid_map, checkpoint, ctx.tmp / "out", dataset=change(grpo_dataset(sid_map)))

    return call


def lasar_sft(ctx: Context, **overrides) -> LasarSFTConfig:
    return LasarSFTConfig(output_dir=str(ctx.tmp), report_to="none", bf16=False, **overrides)


def lasar_grpo(ctx: Context, **overrides) -> LasarGRPOConfig:
    return LasarGRPOConfig(output_dir=str(ctx.tmp), report_to="none", bf16=False, num_generations=2, **overrides)


CASES = [
    # --- data files
    Case("data/unknown-spec", lambda c: load_dataset_spec("nope:x"), DataFormatError, "'nope:x'.*valid specs"),
    Case(
        "data/missing-path",
        lambda c: load_dataset_spec(f"recbole:{c.tmp}/absent"),
        DataFormatError,
        "absent.*does not exist",
    ),
    Case(
        "data/short-row",
        lambda c: appended_interaction(c, "1\t2"),
        DataFormatError,
        r"tiny\.inter, line 98, field 'rating.*': missing",
    ),
    Case(
        "data/non-finite-timestamp",
        lambda c: appended_interaction(c, "1\t2\t4\tnan"),
        DataFormatError,
        r"tiny\.inter, line 98, field 'timestamp.*': not a finite number",
    ),
    Case(
        "data/max-history-0",
        lambda c: load_dataset_spec(f"recbole:{c.recbole}", max_history=0),
        ValueError,
        "max_history",
    ),
    # --- SID maps and build_sids
    Case(
        "sids/output-holds-map",
        lambda c: folder_holding(c, "sid_map.json"),
        FileExistsError,
        r"--output_dir.*--overwrite",
    ),
    Case("sids/output-holds-model", lambda c: folder_holding(c, "config.json"), FileExistsError, r"config\.json"),
    Case("sids/levels-0", lambda c: build_sids_args(c, "--levels", "0"), ValueError, "--levels"),
    Case("sids/levels-too-many", lambda c: build_sids_args(c, "--levels", "30"), ValueError, "--levels"),
    Case("sids/codebook-0", lambda c: build_sids_args(c, "--codebook_size", "0"), ValueError, "codebook_size"),
    Case("sids/codebook-text", lambda c: build_sids_args(c, "--codebook_size", "big"), ValueError, "codebook_size"),
    Case(
        "sids/kmeans-in-yaml",
        lambda c: build_sids_args(c, "--config", c.yaml({"kmeans": "spherical"})),
        ValueError,
        "kmeans must be one of",
    ),
    Case(
        "sids/malformed-sid",
        lambda c: SidMap.load(c.file("m/sid_map.json", '{"1": "<a_1>x"}')),
        ValueError,
        r"sid_map\.json: item '1' has malformed SID",
    ),
    Case(
        "sids/not-json",
        lambda c: SidMap.load(c.file("m/sid_map.json", "{")),
        ValueError,
        r"sid_map\.json: not valid JSON",
    ),
    Case(
        "sids/duplicate-sid",
        lambda c: SidMap.load(c.file("m/sid_map.json", '{"1": "<a_1>", "2": "<a_1>"}')),
        ValueError,
        r"sid_map\.json: items '1' and '2' share SID",
    ),
    Case(
        "sids/unequal-lengths",
        lambda c: SidMap.load(c.file("m/sid_map.json", '{"1": "<a_1>", "2": "<a_2><b_0>"}')),
        ValueError,
        r"sid_map\.json: item '2' has 2 SID tokens",
    ),
    Case(
        "sids/another-datasets-map",
        lambda c: other_datasets_map(c, recorded=True),
        SidMapMismatchError,
        r"other/sid_map\.json was built from dataset 'other' \(\d+ catalog items\).*'tiny' \(\d+ items\)",
    ),
    Case("sids/item-without-sid", map_missing_an_item, DataFormatError, r"item '\d+' has no SID"),
    Case(
        "sids/sid-map-absent", lambda c: script_args("--sid_map", "absent.json"), FileNotFoundError, "--sid_map absent"
    ),
    # --- options shared by the training recipes
    Case("options/max-history-0", lambda c: script_args("--max_history", "0"), ValueError, "--max_history"),
    Case("options/max-train-samples-0", lambda c: script_args("--max_train_samples", "0"), ValueError, "--max_train"),
    Case("options/eval-max-samples-0", lambda c: script_args("--eval_max_samples", "0"), ValueError, "--eval_max"),
    Case("options/eval-num-beams-0", lambda c: script_args("--eval_num_beams", "0"), ValueError, "--eval_num_beams"),
    Case("options/eval-batch-size-0", lambda c: script_args("--eval_batch_size", "0"), ValueError, "--eval_batch"),
    Case(
        "options/sequences-need-compact",
        lambda c: script_args("--stage1_layout", "sequences"),
        ValueError,
        "stage1_layout=sequences needs prompt_template=compact",
    ),
    Case(
        "options/template-in-yaml",
        lambda c: script_args("--config", c.yaml({"prompt_template": "french"})),
        ValueError,
        "prompt_template must be one of",
    ),
    Case(
        "stage1/learning-rate-negative",
        lambda c: stage1_args(c, "--learning_rate", "-1"),
        ValueError,
        "--learning_rate",
    ),
    Case(
        "stage2/learning-rate-0",
        lambda c: RecipeParser(LasarSFTConfig).parse_args_and_config(
            ["--output_dir", str(c.tmp), "--learning_rate", "0"]
        ),
        ValueError,
        "--learning_rate",
    ),
    Case("stage2/min-depth-above-n-max", lambda c: lasar_sft(c, n_max=2, min_depth=3), ValueError, "min_depth"),
    Case("stage2/fixed-without-depth", lambda c: lasar_sft(c, depth_mode="fixed"), ValueError, "fixed_depth"),
    Case("stage2/packing", lambda c: lasar_sft(c, packing=True), ValueError, "packing"),
    Case("stage2/align-temperature-0", lambda c: lasar_sft(c, align_temperature=0), ValueError, "align_temperature"),
    Case("stage2/align-kind", lambda c: lasar_sft(c, align_kind="l1"), ValueError, "align_kind must be one of"),
    Case("stage3/fixed-depth-alone", lambda c: lasar_grpo(c, fixed_depth=2), ValueError, "fixed_depth"),
    Case("stage3/temperature-negative", lambda c: lasar_grpo(c, temperature=-1), ValueError, "temperature"),
    Case("stage3/rollout-beams-0", lambda c: lasar_grpo(c, rollout_num_beams=0), ValueError, "rollout_num_beams"),
    Case("stage3/vllm", lambda c: lasar_grpo(c, use_vllm=True), ValueError, "use_vllm"),
    Case("stage3/baseline-decay-1", lambda c: lasar_grpo(c, depth_baseline_decay=1.0), ValueError, "depth_baseline"),
    Case(
        "stage3/dataset-without-target",
        grpo_dataset_case(lambda rows: rows.remove_columns("target")),
        ValueError,
        "no 'target' column",
    ),
    Case(
        "stage3/dataset-without-anchors",
        grpo_dataset_case(lambda rows: rows.remove_columns("anchors")),
        ValueError,
        r"no 'anchors' column .*terminal_align_weight 0",
    ),
    Case(
        "stage3/prompt-not-ending-in-bot",
        grpo_dataset_case(lambda rows: rows.map(lambda row: {"prompt": row["prompt"] + "."})),
        ValueError,
        "row 0: the 'prompt' column must be text ending in <bot>",
    ),
    Case("main-job/unknown-reward", lambda c: PipelineArguments(reward_funcs=["nope"]), ValueError, "reward_funcs"),
    Case("main-job/max-rl-prompts-0", lambda c: PipelineArguments(max_rl_prompts=0), ValueError, "max_rl_prompts"),
    # --- CoT options and files
    Case("cot/file-source-without-file", lambda c: CotArguments(cot_source="file"), ValueError, "--cot_file"),
    Case(
        "cot/file-absent",
        lambda c: CotArguments(cot_source="file", cot_file="absent.jsonl"),
        FileNotFoundError,
        "--cot_file absent",
    ),
    Case("cot/hf-without-teacher", lambda c: CotArguments(cot_source="hf"), ValueError, "--teacher_model"),
    Case(
        "cot/openai-without-url",
        lambda c: CotArguments(cot_source="openai", teacher_model="m"),
        ValueError,
        "--teacher_base_url",
    ),
    Case(
        "cot/merge-threshold",
        lambda c: CotArguments(segment_merge_threshold=2.0),
        ValueError,
        "segment_merge_threshold",
    ),
    Case(
        "cot/malformed-line",
        lambda c: read_cot_file(str(c.file("cot.jsonl", '{"prompt": "p", "cot": "c"}\n{"prompt": "q"}\n')), ["p"]),
        DataFormatError,
        r"cot\.jsonl line 2: expected",
    ),
    Case(
        "cot/prompt-without-cot",
        lambda c: read_cot_file(str(c.file("cot.jsonl", '{"prompt": "p", "cot": "c"}\n')), ["p", "q"]),
        DataFormatError,
        r"cot\.jsonl has no CoT for 1 of 2 prompts",
    ),
    # --- evaluate.py
    Case(
        "evaluate/not-a-checkpoint",
        lambda c: evaluate_args(c, "--checkpoint", str(c.tmp)),
        FileNotFoundError,
        "--checkpoint",
    ),
    Case(
        "evaluate/embedded-base-model",
        lambda c: evaluate_args(c, "--checkpoint", EMBEDDED_MODEL),
        ValueError,
        "--checkpoint embedded:.*base model.*sft_stage1",
    ),
    Case(
        "evaluate/depth-above-n-max",
        lambda c: evaluate_args(c, "--depth", "99", n_max=8),
        ValueError,
        r"--depth 99 is above n_max=8 of .*lasar_config\.json",
    ),
    Case("evaluate/depth-negative", lambda c: evaluate_args(c, "--depth", "-1"), ValueError, "--depth"),
    Case("evaluate/num-beams-0", lambda c: evaluate_args(c, "--num_beams", "0"), ValueError, "--num_beams"),
    Case("evaluate/max-samples-0", lambda c: evaluate_args(c, "--max_samples", "0"), ValueError, "--max_samples"),
    Case("evaluate/batch-size-0", lambda c: evaluate_args(c, "--batch_size", "0"), ValueError, "--batch_size"),
    Case(
        "evaluate/split-in-yaml",
        lambda c: evaluate_args(c, "--config", c.yaml({"split": "holdout"})),
        ValueError,
        "split must be one of",
    ),
    # --- checkpoints and model names
    Case("checkpoint/truncated-head", truncated_head, ValueError, r"lasar_head\.safetensors: cannot load"),
    Case(
        "checkpoint/lasar-config-unknown-key",
        lambda c: edited_lasar_config(c, json.dumps({"hidden_size": HIDDEN, "depth": 3})),
        ValueError,
        r"lasar_config\.json: not a LASAR config",
    ),
    Case(
        "checkpoint/lasar-config-not-json",
        lambda c: edited_lasar_config(c, "{"),
        ValueError,
        r"lasar_config\.json: not valid JSON",
    ),
    Case(
        "checkpoint/head-for-another-hidden-size",
        lambda c: load_lasar(tiny_model(), str(lasar_folder(c, hidden_size=8))),
        ValueError,
        r"lasar_config\.json is for hidden size 8",
    ),
    Case("checkpoint/no-sid-map", lambda c: load_recommender(str(c.tmp)), FileNotFoundError, r"has no sid_map\.json"),
    Case("checkpoint/embedded-base-model", lambda c: load_recommender(EMBEDDED_MODEL), ValueError, "base model"),
    Case(
        "checkpoint/unknown-embedded-model",
        lambda c: resolve_model_path("embedded:Llama-70B"),
        ValueError,
        "unknown embedded model 'embedded:Llama-70B'",
    ),
    Case(
        "merge-lora/adapter-not-a-checkpoint",
        lambda c: MergeLoraArguments(adapter=str(c.tmp), output_dir=str(c.tmp / "merged")),
        FileNotFoundError,
        "--adapter",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_refused_naming_what_to_fix(case: Case, tmp_path, request):
    with pytest.raises(case.error) as raised:
        case.call(Context(tmp_path, request))
    assert re.search(case.names, str(raised.value)), f"{raised.value!s} does not name {case.names!r}"


def test_the_table_is_large_and_its_ids_unique():
    assert len(CASES) >= 40
    assert len({case.id for case in CASES}) == len(CASES)


def test_build_sids_leaves_an_existing_map_untouched_unless_overwrite(tmp_path):
    sid_map = tmp_path / "sids" / "sid_map.json"
    sid_map.parent.mkdir()
    sid_map.write_text('{"1": "<a_0>"}')
    with pytest.raises(FileExistsError):
        BuildSidsArguments(dataset="ml-100k", output_dir=str(sid_map.parent))
    assert sid_map.read_text() == '{"1": "<a_0>"}'
    assert BuildSidsArguments(dataset="ml-100k", output_dir=str(sid_map.parent), overwrite=True).overwrite


def test_a_map_records_its_dataset_and_passes_on_it(tiny_recbole_dir):
    data = load_dataset_spec(f"recbole:{tiny_recbole_dir}")
    items = sorted(data.catalog)
    sid_map = SidMap.from_codes(items, torch.arange(len(items)).unsqueeze(1))
    sid_map.stats.update(dataset_record(data.name, items))
    check_items_known(data, sid_map)


def test_a_map_without_its_dataset_recorded_is_warned_about(tmp_path, request, caplog):
    with caplog.at_level(logging.WARNING):
        other_datasets_map(Context(tmp_path, request), recorded=False)
    assert "records no dataset" in caplog.text and "tiny" in caplog.text


def test_depth_on_a_checkpoint_without_latent_steps_is_warned_about(tmp_path, request, caplog):
    with caplog.at_level(logging.WARNING):
        (args,) = evaluate_args(Context(tmp_path, request), "--depth", "3")
    assert args.depth == 3
    assert "--depth 3" in caplog.text and "never trained with latent steps" in caplog.text


def test_recipes_turn_bf16_off_with_one_warning_where_the_machine_has_none(tmp_path, monkeypatch):
    monkeypatch.setattr("lasar_trl.configs.bf16_supported", lambda use_cpu: False)
    with pytest.warns(UserWarning, match="no bf16 support.*bf16 turned off") as caught:
        _, training_args, _ = stage1_args(Context(tmp_path, None))
    assert len([w for w in caught if "bf16" in str(w.message)]) == 1
    assert training_args.bf16 is False
