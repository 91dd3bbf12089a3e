import os
import socket
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """The real datasets of ../shared/data (or $LASAR_SHARED_DATA); skips when absent."""
    root = Path(os.environ.get("LASAR_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    if not root.is_dir():
        pytest.skip(f"shared data not found at {root} (set LASAR_SHARED_DATA to its location)")
    return root


@pytest.fixture(scope="session")
def smol_path() -> str:
    """The embedded SmolLM2-135M converted to an HF folder (once per machine, ~1 min)."""
    from lasar_trl.modeling.loading import EMBEDDED_MODEL, embedded_gguf_path, resolve_model_path

    try:
        embedded_gguf_path()
    except FileNotFoundError as error:
        pytest.skip(str(error))
    return resolve_model_path(EMBEDDED_MODEL)


@pytest.fixture
def smol_tokenizer(smol_path):
    """The real SmolLM2 tokenizer: pad == eos (<|im_end|>), as the pitfall needs."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smol_path)


@pytest.fixture
def tiny_sid_map():
    """40 items with 3 random codes of 4 values each, plus the disambiguation level."""
    import torch

    from lasar_trl.sid import SidMap

    codes = torch.randint(0, 4, (40, 3), generator=torch.Generator().manual_seed(0))
    return SidMap.from_codes([str(i) for i in range(40)], codes)


def make_tiny_model(tokenizer, seed: int = 0, tie_word_embeddings: bool = True):
    """A 2-layer random Llama with the real tokenizer's vocabulary."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, initializer_range=0.2,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id, tie_word_embeddings=tie_word_embeddings,
    )
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config)


@pytest.fixture
def tiny_recommender(smol_tokenizer, tiny_sid_map):
    """(model, tokenizer, sid_map): a tiny random model that knows the SID tokens."""
    from lasar_trl.sid.tokenizer import add_sid_tokens

    model = make_tiny_model(smol_tokenizer)
    add_sid_tokens(model, smol_tokenizer, tiny_sid_map)
    model.eval()
    return model, smol_tokenizer, tiny_sid_map


@pytest.fixture
def tiny_recbole_dir(tmp_path):
    """A small RecBole atomic dataset with titles: 30 items, 12 users x 8 interactions."""
    import random

    rng = random.Random(0)
    folder = tmp_path / "tiny"
    folder.mkdir()
    genres = ["Comedy", "Drama", "Action", "Horror", "Romance"]
    items = [f"{i}\tMovie number {i}\t{genres[i % 5]}" for i in range(1, 31)]
    header = "item_id:token\tmovie_title:token_seq\tclass:token_seq\n"
    (folder / "tiny.item").write_text(header + "\n".join(items) + "\n")
    rows = []
    for user in range(1, 13):
        for step, item in enumerate(rng.sample(range(1, 31), 8)):
            rows.append(f"{user}\t{item}\t4\t{1000 * user + step}")
    (folder / "tiny.inter").write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n" + "\n".join(rows) + "\n"
    )
    return folder


def tiny_job_configs(folder: Path, tokenizer, dataset: str, **stage_overrides) -> dict[str, str]:
    """Stage-1 and Stage-2 yamls for the main job on a tiny random model: the repository's yamls with
    that model, SIDs built for `dataset` with 4 codes per level, and `stage_overrides` (both stages)."""
    import subprocess
    import sys

    import yaml

    recipes = Path(__file__).resolve().parents[1] / "recipes"
    make_tiny_model(tokenizer).save_pretrained(folder / "base")
    tokenizer.save_pretrained(folder / "base")
    subprocess.run([sys.executable, str(recipes / "build_sids.py"), "--dataset", dataset, "--output_dir",
                    str(folder / "sids"), "--codebook_size", "4"], check=True, timeout=300)
    stage1 = dict(max_steps=2, per_device_train_batch_size=4, model_name_or_path=str(folder / "base"),
                  sid_map=str(folder / "sids" / "sid_map.json"))
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
