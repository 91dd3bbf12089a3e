"""TRL's own scripts, trl/scripts/sft.py and grpo.py copied from the installed package with only the
trainer and config classes swapped for ours, train all three stages from recipes/prepare_data.py's
output (`--dataset_name DIR`), with the Stage-3 rewards named on grpo.py's command line.

The swaps are the import lines docs/data.md shows; each replaced text must occur exactly once in
TRL's script, so a change there fails here by name rather than as a silently unswapped class."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import trl
from testing_utils import make_tiny_model

from lasar_trl import Recommender
from lasar_trl.data import load_dataset_spec
from lasar_trl.modeling.lasar import has_lasar
from lasar_trl.sid.sid_map import SidMap
from lasar_trl.tasks import PROMPT_TEMPLATE_KEY

PREPARE_DATA = Path(__file__).resolve().parents[1] / "recipes" / "prepare_data.py"
IMPORT_ANCHOR = "\nimport argparse\n"  # our classes are imported after it, at the top of the script
SWAPS = {  # stage: (TRL's script, our classes imported under TRL's names, TRL's imports without its classes)
    1: (
        "sft.py",
        "from lasar_trl.trainers import SidSFTTrainer as SFTTrainer",
        {"from trl import SFTTrainer, get_dataset": "from trl import get_dataset"},
    ),
    2: (
        "sft.py",
        "from lasar_trl.trainers import LasarSFTConfig as SFTConfig, LasarSFTTrainer as SFTTrainer",
        {
            "from trl import SFTTrainer, get_dataset": "from trl import get_dataset",
            "ScriptArguments, SFTConfig, TrlParser": "ScriptArguments, TrlParser",
        },
    ),
    3: (
        "grpo.py",
        "from lasar_trl.trainers import LasarGRPOConfig as GRPOConfig, LasarGRPOTrainer as GRPOTrainer",
        {
            "from trl import GRPOTrainer, get_dataset": "from trl import get_dataset",
            "DatasetMixtureConfig, GRPOConfig, ModelConfig": "DatasetMixtureConfig, ModelConfig",
        },
    ),
}
REWARDS = {  # dotted paths on grpo.py's --reward_funcs (module-level functions and a class) -> logged name
    "lasar_trl.rewards.ranking": "ranking",
    "lasar_trl.rewards.exact_match": "exact_match",
    "lasar_trl.rewards.PrefixMatchReward": "prefix_match",
}
COMMON_FLAGS = dict(
    max_steps=2,
    use_cpu="true",
    bf16="false",
    report_to="none",
    logging_steps=1,
    save_strategy="steps",
    save_steps=2,
    dataloader_num_workers=0,
    seed=0,
)


def trl_script_with_our_classes(stage: int, folder: Path) -> Path:
    """TRL's installed script for `stage` copied into `folder` with our classes imported under TRL's
    names and TRL's dropped from its `from trl import` lines; nothing else changes."""
    name, our_import, trl_imports = SWAPS[stage]
    source = (Path(trl.__file__).parent / "scripts" / name).read_text()
    for old, new in {IMPORT_ANCHOR: f"{IMPORT_ANCHOR}\n{our_import}\n", **trl_imports}.items():
        assert source.count(old) == 1, f"TRL's {name} changed: {old!r} no longer occurs exactly once"
        source = source.replace(old, new)
    script = folder / f"stage{stage}_{name}"
    script.write_text(source)
    return script


def run_python(script: Path, flags: dict[str, object], folder: Path, *extra: str) -> None:
    """`python script --flag value ...` in `folder`, one thread, its datasets cache in `folder`."""
    command = [sys.executable, str(script), *extra]
    command += [part for name, value in flags.items() for part in (f"--{name}", str(value))]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_DATASETS_CACHE": str(folder / "hf_cache")}
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{script.name} failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"


def log_history(output_dir: Path) -> list[dict]:
    return json.loads((output_dir / "checkpoint-2" / "trainer_state.json").read_text())["log_history"]


def logged_steps(history: list[dict], key: str) -> int:
    return len([entry for entry in history if key in entry])


@pytest.mark.slow
def test_trls_own_sft_and_grpo_scripts_train_all_three_stages_from_prepare_data_output(
    tiny_recbole_dir, smol_tokenizer, tmp_path
):
    spec = f"recbole:{tiny_recbole_dir}"
    items = sorted(load_dataset_spec(spec).catalog)
    sid_map = SidMap.from_codes(items, torch.randint(0, 4, (len(items), 3), generator=torch.Generator().manual_seed(0)))
    sid_map.save(tmp_path / "sids")
    make_tiny_model(smol_tokenizer).save_pretrained(tmp_path / "base")  # a base model: no SIDs
    smol_tokenizer.save_pretrained(tmp_path / "base")
    data = {stage: tmp_path / f"data{stage}" for stage in (1, 2, 3)}
    checkpoint = {stage: tmp_path / f"stage{stage}" for stage in (1, 2, 3)}
    prepare = dict(dataset=spec, max_train_samples=16, seed=0, device="cpu")

    # Stage 1: prepare_data writes the base model with the SID vocabulary beside the rows.
    run_python(
        PREPARE_DATA,
        dict(stage=1, model_name_or_path=tmp_path / "base", sid_map=tmp_path / "sids", output_dir=data[1], **prepare),
        tmp_path,
    )
    stage1_flags = dict(model_name_or_path=data[1] / "model", dataset_name=data[1], output_dir=checkpoint[1])
    validation = dict(dataset_test_split="validation", eval_strategy="steps", eval_steps=2)
    sft = trl_script_with_our_classes(1, tmp_path)
    run_python(sft, {**stage1_flags, **validation, **COMMON_FLAGS, "per_device_train_batch_size": 4}, tmp_path)
    history = log_history(checkpoint[1])
    assert logged_steps(history, "loss") == 2 and logged_steps(history, "eval_loss") == 1  # the validation file
    stage1 = Recommender.from_pretrained(str(checkpoint[1]), device="cpu")  # sft.py's save_model: a recommender
    assert stage1.sid_map == sid_map and getattr(stage1.model.config, PROMPT_TEMPLATE_KEY) == "english"
    recommended = stage1.recommend([items[:3]], top_k=3)[0].items
    assert len(set(recommended)) == 3 and set(recommended) <= set(items[3:])  # unseen catalog items

    # Stage 2: rows with their anchors from the Stage-1 checkpoint; sft.py with the LASAR config too.
    run_python(PREPARE_DATA, dict(stage=2, model_name_or_path=checkpoint[1], output_dir=data[2], **prepare), tmp_path)
    stage2_flags = dict(model_name_or_path=checkpoint[1], dataset_name=data[2], output_dir=checkpoint[2], n_max=4)
    sft_latent = trl_script_with_our_classes(2, tmp_path)
    run_python(sft_latent, {**stage2_flags, **COMMON_FLAGS, "per_device_train_batch_size": 4}, tmp_path)
    history = log_history(checkpoint[2])
    assert logged_steps(history, "align_kl") == 2 and logged_steps(history, "depth_ce") == 2  # the anchors, read
    assert has_lasar(str(checkpoint[2])) and SidMap.load(checkpoint[2]) == sid_map

    # Stage 3: prompts, targets and terminal anchors (of the Stage-1 model); grpo.py from the Stage-2 checkpoint.
    run_python(PREPARE_DATA, dict(stage=3, model_name_or_path=checkpoint[1], output_dir=data[3], **prepare), tmp_path)
    stage3_flags = dict(model_name_or_path=checkpoint[2], dataset_name=data[3], output_dir=checkpoint[3])
    rl = dict(per_device_train_batch_size=8, num_generations=4, activation_checkpointing="false")
    grpo = trl_script_with_our_classes(3, tmp_path)
    reward_flags = ("--reward_funcs", *REWARDS, "--reward_weights", "1.0", "2.0", "1.0")
    run_python(grpo, {**stage3_flags, **rl, **COMMON_FLAGS}, tmp_path, *reward_flags)
    history = log_history(checkpoint[3])
    for name in REWARDS.values():
        assert logged_steps(history, f"rewards/{name}/mean") == 2, name
    assert logged_steps(history, "terminal_kl") == 2  # the anchors column, read by the terminal alignment
    assert has_lasar(str(checkpoint[3])) and SidMap.load(checkpoint[3]) == sid_map
