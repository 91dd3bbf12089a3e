import os
from pathlib import Path

import pytest
from testing_utils import make_tiny_model


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
