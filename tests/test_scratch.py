import random
import string

import pytest
import torch
from transformers import AutoTokenizer

from lasar_trl.modeling.checkpoint import load_recommender
from lasar_trl.modeling.scratch import SCRATCH_PRESETS, build_scratch_backbone, is_scratch, scratch_preset
from lasar_trl.sid.tokenizer import BOT_TOKEN, add_sid_tokens


@pytest.fixture(scope="module")
def texts() -> list[str]:
    """Enough distinct words for the BPE to reach its 2,500-token target, with the SID and
    `<bot>` tokens the recipes' texts hold."""
    rng = random.Random(0)
    words = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 9))) for _ in range(600)]
    return [" ".join(rng.choices(words, k=12)) + BOT_TOKEN + "<a_1><b_2>" for _ in range(400)]


@pytest.fixture(scope="module")
def tiny(texts):
    return build_scratch_backbone("scratch:tiny", texts, seed=0)


def test_names_and_presets():
    assert is_scratch("scratch:tiny") and not is_scratch("HuggingFaceTB/SmolLM2-135M") and not is_scratch(None)
    assert scratch_preset("scratch:small") == SCRATCH_PRESETS["small"]
    for bad in ("scratch:huge", "tiny"):
        with pytest.raises(ValueError, match="--model_name_or_path.*scratch:tiny, scratch:small"):
            scratch_preset(bad)


def test_same_seed_same_backbone_and_caller_rng_untouched(texts, tiny):
    model, tokenizer = tiny
    state = torch.get_rng_state()
    again, again_tokenizer = build_scratch_backbone("scratch:tiny", texts, seed=0)
    assert torch.equal(torch.get_rng_state(), state)
    other, _ = build_scratch_backbone("scratch:tiny", texts, seed=1)
    assert again_tokenizer.get_vocab() == tokenizer.get_vocab()
    weights, again_weights, other_weights = (m.state_dict() for m in (model, again, other))
    assert all(torch.equal(weights[name], again_weights[name]) for name in weights)
    assert not torch.equal(weights["model.embed_tokens.weight"], other_weights["model.embed_tokens.weight"])


def test_tokenizer_reads_any_text_and_adds_nothing(tiny):
    _, tokenizer = tiny
    text = "Café ☕ 東京 \t¿qué? 🙂"
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.decode(ids) == text
    assert ids == tokenizer.backend_tokenizer.encode(text).ids  # no BOS, no EOS, no post-processor
    assert tokenizer.bos_token_id is None and tokenizer.eos_token_id != tokenizer.pad_token_id
    assert not any(piece in tokenizer.get_vocab() for piece in ("<a_1>", BOT_TOKEN))  # never learnt as BPE pieces


def test_sid_tokens_tokenize_whole(texts, tiny_sid_map):
    model, tokenizer = build_scratch_backbone("scratch:tiny", texts, seed=0)
    add_sid_tokens(model, tokenizer, tiny_sid_map)
    first, second = (tiny_sid_map.sid(item) + BOT_TOKEN for item in ("0", "1"))
    first_ids, second_ids = (tokenizer(text)["input_ids"] for text in (first, second))
    assert first_ids == tokenizer.convert_tokens_to_ids([*tiny_sid_map["0"], BOT_TOKEN])
    assert len(first_ids) == tiny_sid_map.sid_length + 1 == 5
    assert tokenizer(first + second)["input_ids"] == first_ids + second_ids
    bot_id = tokenizer.convert_tokens_to_ids(BOT_TOKEN)
    assert tokenizer("Recommend after lesson" + BOT_TOKEN)["input_ids"][-1] == bot_id


def test_saved_folder_reloads_as_a_recommender(texts, tiny_sid_map, tmp_path):
    model, tokenizer = build_scratch_backbone("scratch:tiny", texts, seed=0)
    add_sid_tokens(model, tokenizer, tiny_sid_map)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    tiny_sid_map.save(tmp_path)
    loaded, loaded_tokenizer, loaded_map = load_recommender(str(tmp_path), tiny_sid_map, dtype=torch.float32)
    assert loaded_map == tiny_sid_map and loaded_tokenizer.get_vocab() == tokenizer.get_vocab()
    assert AutoTokenizer.from_pretrained(tmp_path).pad_token == tokenizer.pad_token
    text = "Café ☕ " + tiny_sid_map.sid("3") + BOT_TOKEN
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    assert loaded_tokenizer(text, return_tensors="pt")["input_ids"].tolist() == ids.tolist()
    model.eval()
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)


def test_tiny_size_matches_the_documented_count(tiny):
    model, tokenizer = tiny
    assert len(tokenizer) == 2500
    assert model.config.tie_word_embeddings
    assert sum(p.numel() for p in model.parameters()) == 283_200  # module docstring: 0.28M


def test_forward_and_backward(tiny):
    model, tokenizer = tiny
    model.train()
    batch = tokenizer(["a short sentence", "and a rather longer one here"], padding=True, return_tensors="pt")
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    loss = model(**batch, labels=labels).loss
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    model.zero_grad()
