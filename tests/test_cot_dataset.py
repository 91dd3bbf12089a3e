"""From training windows to the Stage-2 dataset: CoT sources, segmentation, anchors."""

import json

import pytest
import torch
from testing_utils import make_tiny_model

from lasar_trl.configs import CotArguments
from lasar_trl.cot.dataset import latent_sft_dataset, segment_all
from lasar_trl.cot.sources import rationales, read_cot_file
from lasar_trl.data import load_dataset_spec, training_windows
from lasar_trl.data.schema import DataFormatError
from lasar_trl.sid.build import build_sid_map
from lasar_trl.sid.tokenizer import add_sid_tokens
from lasar_trl.tasks import history_prompt


@pytest.fixture
def tiny_data(tiny_recbole_dir):
    data = load_dataset_spec(f"recbole:{tiny_recbole_dir}")
    return data, build_sid_map(data, codebook_size=4)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(cot_source="llm"), "cot_source"),
        (dict(cot_source="file"), "--cot_file"),
        (dict(cot_source="hf"), "--teacher_model"),
        (dict(cot_source="openai", teacher_model="m"), "--teacher_base_url"),
        (dict(segment_merge_threshold=1.5), "segment_merge_threshold"),
    ],
)
def test_invalid_cot_arguments_name_the_flag(overrides, message):
    with pytest.raises(ValueError, match=message):
        CotArguments(**overrides)


def test_cot_file_is_read_by_prompt_and_bad_rows_name_their_line(tiny_data, tmp_path):
    data, sid_map = tiny_data
    windows = training_windows(data, 3, seed=0)
    prompts = [history_prompt(w.history, sid_map) for w in windows]
    file = tmp_path / "cot.jsonl"
    file.write_text("".join(json.dumps({"prompt": p, "cot": f"Reason {i}."}) + "\n" for i, p in enumerate(prompts)))
    assert read_cot_file(str(file), prompts[::-1]) == ["Reason 2.", "Reason 1.", "Reason 0."]
    assert rationales(CotArguments(cot_source="file", cot_file=str(file)), data, sid_map, windows, str(tmp_path)) == [
        "Reason 0.",
        "Reason 1.",
        "Reason 2.",
    ]
    with pytest.raises(DataFormatError, match="no CoT for 1 of 4 prompts"):
        read_cot_file(str(file), prompts + ["unknown prompt"])
    file.write_text(json.dumps({"prompt": prompts[0], "cot": "ok"}) + "\n" + '{"prompt": "x"}\n')
    with pytest.raises(DataFormatError, match="line 2"):
        read_cot_file(str(file), prompts[:1])


def test_training_windows_are_a_seeded_subset_in_data_order(tiny_data):
    data, _ = tiny_data
    subset = training_windows(data, 5, seed=3)
    assert subset == training_windows(data, 5, seed=3) and len(subset) == 5
    positions = [data.splits["train"].index(w) for w in subset]
    assert positions == sorted(positions)
    assert training_windows(data, None, seed=0) == list(data.splits["train"])


def test_segment_all_embeds_each_distinct_sentence_once():
    calls = []

    def embed(texts):
        calls.append(list(texts))
        return torch.tensor([[1.0, 0.0] if "drama" in t else [0.0, 1.0] for t in texts])

    cots = ["I like drama. More drama please. Now comedy.", "Now comedy. I like drama."]
    assert segment_all(cots) == [
        ["I like drama.", "More drama please.", "Now comedy."],
        ["Now comedy.", "I like drama."],
    ]
    merged = segment_all(cots, embed, threshold=0.9)
    assert merged == [["I like drama. More drama please.", "Now comedy."], ["Now comedy.", "I like drama."]]
    assert len(calls) == 1 and sorted(calls[0]) == sorted({"I like drama.", "More drama please.", "Now comedy."})


def test_latent_sft_dataset_has_one_anchor_per_segment_and_refuses_empty_cots(tiny_data, smol_tokenizer, tmp_path):
    data, sid_map = tiny_data
    model = make_tiny_model(smol_tokenizer)
    add_sid_tokens(model, smol_tokenizer, sid_map)
    windows = training_windows(data, 4, seed=0)
    cots = rationales(CotArguments(), data, sid_map, windows, str(tmp_path))
    dataset = latent_sft_dataset(model, smol_tokenizer, sid_map, windows, cots, str(tmp_path / "anchors"))
    assert dataset.column_names == ["prompt", "completion", "target", "history", "cot", "anchors"]
    for row in dataset:
        assert len(row["anchors"]) == len(segment_all([row["cot"]])[0]) and len(row["anchors"][0]) == 32
    with pytest.raises(ValueError, match="sample 1 .* empty CoT"):
        latent_sft_dataset(model, smol_tokenizer, sid_map, windows, [cots[0], " ", *cots[2:]], str(tmp_path / "a2"))


def test_hf_teacher_rationales_are_cached_for_the_next_run(tiny_data, smol_tokenizer, tmp_path):
    data, sid_map = tiny_data
    teacher = tmp_path / "teacher"
    make_tiny_model(smol_tokenizer).save_pretrained(teacher)
    smol_tokenizer.save_pretrained(teacher)
    args = CotArguments(cot_source="hf", teacher_model=str(teacher), teacher_max_new_tokens=6)
    windows = training_windows(data, 3, seed=0)
    first = rationales(args, data, sid_map, windows, str(tmp_path / "cot"))
    assert len(first) == 3 and all(isinstance(text, str) for text in first)
    cache = tmp_path / "cot" / "teacher.jsonl"
    cached = cache.read_text()
    assert len(cached.splitlines()) == len({w.history for w in windows})  # one answer per distinct request
    assert rationales(args, data, sid_map, windows, str(tmp_path / "cot")) == first
    assert cache.read_text() == cached  # the second run asked the teacher nothing
