"""Plain helpers shared by the tests and their worker scripts (subprocesses, outside pytest): conftest.py
is pytest's plugin file for fixtures, not a module to import."""

import socket
import subprocess
import sys
from pathlib import Path

import yaml


def make_tiny_model(tokenizer, seed: int = 0, tie_word_embeddings: bool = True):
    """A 2-layer random Llama with the real tokenizer's vocabulary."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        initializer_range=0.2,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        tie_word_embeddings=tie_word_embeddings,
    )
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config)


def tiny_job_configs(folder: Path, tokenizer, dataset: str, **stage_overrides) -> dict[str, str]:
    """Stage-1 and Stage-2 yamls for the main job on a tiny random model: the repository's yamls with
    that model, SIDs built for `dataset` with 4 codes per level, and `stage_overrides` (both stages)."""
    recipes = Path(__file__).resolve().parents[1] / "recipes"
    make_tiny_model(tokenizer).save_pretrained(folder / "base")
    tokenizer.save_pretrained(folder / "base")
    subprocess.run(
        [
            sys.executable,
            str(recipes / "build_sids.py"),
            "--dataset",
            dataset,
            "--output_dir",
            str(folder / "sids"),
            "--codebook_size",
            "4",
        ],
        check=True,
        timeout=300,
    )
    stage1 = dict(
        max_steps=2,
        per_device_train_batch_size=4,
        model_name_or_path=str(folder / "base"),
        sid_map=str(folder / "sids" / "sid_map.json"),
    )
    configs = {}
    for name, overrides in (("sft_stage1.yaml", stage1), ("sft_latent.yaml", {})):
        config = yaml.safe_load((recipes / name).read_text())
        config.pop("model_name_or_path", None)  # Stage 2 starts from the job's Stage 1
        (folder / name).write_text(yaml.safe_dump({**config, **overrides, **stage_overrides}))
        configs[name] = str(folder / name)
    return {"stage1_config": configs["sft_stage1.yaml"], "stage2_config": configs["sft_latent.yaml"]}


def free_port() -> int:
    """A free local TCP port, for a torchrun rendezvous."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
