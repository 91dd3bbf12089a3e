"""Anchors: token positions, extraction against a plain decoder pass, and the resumable store."""

import json
import os
import re
import subprocess
import sys

import pytest
import torch
from testing_utils import free_port
from transformers import AutoModelForCausalLM, LlamaConfig

from lasar_trl.cot import (
    AnchorMismatchError,
    AnchorStore,
    anchor_token_positions,
    anchors_for_samples,
    extract_anchors,
    model_fingerprint,
    sample_key,
    segment,
)
from lasar_trl.cot import anchors as anchors_module
from lasar_trl.sid import SidMap
from lasar_trl.sid.tokenizer import BOT_TOKEN
from lasar_trl.tasks import history_prompt

COTS = [
    "The user watched two comedies. Then a café drama! Next comes something calm.",
    "Mostly action.",
    "Recent items share a prefix.\nThe next one likely does too.",
    "Short history. Long gaps between items? Still one genre.",
]
HISTORIES = [["1", "2"], ["3"], ["4", "5", "6", "7"], ["8", "9", "10"]]


def samples(sid_map):
    prompts = [history_prompt(history, sid_map) for history in HISTORIES]
    return prompts, COTS, [segment(cot) for cot in COTS]


def test_anchor_positions_are_the_last_token_of_each_segment(tiny_recommender):
    _, tokenizer, sid_map = tiny_recommender
    prompt, cot = history_prompt(["1", "2"], sid_map), COTS[0]
    segments = segment(cot)
    assert len(segments) == 3
    ids, positions = anchor_token_positions(tokenizer, prompt, cot, segments)
    prompt_ids = tokenizer(prompt)["input_ids"]
    assert ids[: len(prompt_ids)] == prompt_ids  # the prompt, `<bot>` last, is a prefix
    assert tokenizer.convert_ids_to_tokens(ids[len(prompt_ids) - 1]) == BOT_TOKEN
    assert [tokenizer.decode(ids[position]) for position in positions] == [".", "!", "."]
    for text, position in zip(segments, positions):
        assert tokenizer.decode(ids[: position + 1]).endswith(text)
    assert positions[-1] == len(ids) - 1


def test_anchor_positions_refuse_empty_cots_and_segments_sharing_a_token(tiny_recommender):
    _, tokenizer, sid_map = tiny_recommender
    prompt = history_prompt(["1"], sid_map)
    with pytest.raises(ValueError, match="empty"):
        anchor_token_positions(tokenizer, prompt, "  ", [])
    with pytest.raises(ValueError, match="no segments"):
        anchor_token_positions(tokenizer, prompt, "Some text.", [])
    with pytest.raises(ValueError, match="same token"):  # "nothing" is one token
        anchor_token_positions(tokenizer, prompt, "nothing", ["no", "thing"])


def test_anchor_is_the_plain_decoder_state_at_its_position(tiny_recommender):
    model, tokenizer, sid_map = tiny_recommender
    prompts, cots, segments = samples(sid_map)
    model.train()
    (anchor,) = extract_anchors(model, tokenizer, prompts[:1], cots[:1], segments[:1])
    assert model.training  # mode restored
    model.eval()
    ids, positions = anchor_token_positions(tokenizer, prompts[0], cots[0], segments[0])
    with torch.no_grad():
        hidden = model.get_decoder()(input_ids=torch.tensor([ids])).last_hidden_state[0]  # (T, H)
    assert anchor.shape == (3, 32) and anchor.dtype == torch.float32 and anchor.device.type == "cpu"
    assert not torch.is_inference(anchor)  # usable in a training loss
    torch.testing.assert_close(anchor, hidden[positions])


def test_batched_extraction_with_padding_matches_one_at_a_time(tiny_recommender):
    model, tokenizer, sid_map = tiny_recommender
    prompts, cots, segments = samples(sid_map)
    batched = extract_anchors(model, tokenizer, prompts, cots, segments, batch_size=3)
    alone = extract_anchors(model, tokenizer, prompts, cots, segments, batch_size=1)
    assert [anchor.shape[0] for anchor in batched] == [3, 1, 2, 3]
    for got, expected in zip(batched, alone):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_sample_key_is_unambiguous_and_covers_the_segmentation():
    assert sample_key("ab", "c") != sample_key("a", "bc")
    assert sample_key("p", "One. Two.") == sample_key("p", "One. Two.")
    assert sample_key("p", "One. Two.", ["One.", "Two."]) != sample_key("p", "One. Two.", ["One. Two."])


def count_extractions(monkeypatch, fail_on_call: int | None = None) -> list[int]:
    """Wrap extract_anchors: record each call's sample count; raise on call number `fail_on_call`."""
    calls, real = [], anchors_module.extract_anchors

    def counted(model, tokenizer, prompts, *args, **kwargs):
        calls.append(len(prompts))
        if len(calls) == fail_on_call:
            raise RuntimeError("crash")
        return real(model, tokenizer, prompts, *args, **kwargs)

    monkeypatch.setattr(anchors_module, "extract_anchors", counted)
    return calls


def shard_files(directory):
    return {path.name: path.stat().st_mtime_ns for path in directory.glob("anchors-*.safetensors")}


def test_store_round_trip_and_a_rerun_extracts_nothing(tiny_recommender, tmp_path, monkeypatch):
    model, tokenizer, sid_map = tiny_recommender
    prompts, cots, segments = samples(sid_map)
    expected = extract_anchors(model, tokenizer, prompts, cots, segments)
    store_dir = tmp_path / "anchors"
    calls = count_extractions(monkeypatch)
    first = anchors_for_samples(model, tokenizer, sid_map, prompts, cots, segments, store_dir, shard_size=3)
    assert calls == [3, 1]
    assert sorted(shard_files(store_dir)) == ["anchors-p0-00000.safetensors", "anchors-p0-00001.safetensors"]
    for got, want in zip(first, expected):
        torch.testing.assert_close(got, want)

    files = shard_files(store_dir)
    again = anchors_for_samples(model, tokenizer, sid_map, prompts, cots, segments, store_dir, shard_size=3)
    assert calls == [3, 1] and shard_files(store_dir) == files
    for got, want in zip(again, expected):
        torch.testing.assert_close(got, want)

    store = AnchorStore(store_dir, model_fingerprint(model, tokenizer, sid_map))
    keys = [sample_key(*sample) for sample in zip(prompts, cots, segments)]
    assert len(store) == 4 and all(key in store for key in keys)
    torch.testing.assert_close(store.get(keys[::-1]), expected[::-1])


def test_an_interrupted_run_resumes_with_only_the_missing_samples(tiny_recommender, tmp_path, monkeypatch):
    model, tokenizer, sid_map = tiny_recommender
    prompts, cots, segments = samples(sid_map)
    store_dir = tmp_path / "anchors"
    count_extractions(monkeypatch, fail_on_call=2)
    with pytest.raises(RuntimeError, match="crash"):
        anchors_for_samples(model, tokenizer, sid_map, prompts, cots, segments, store_dir, shard_size=2)
    assert list(shard_files(store_dir)) == ["anchors-p0-00000.safetensors"]

    calls = count_extractions(monkeypatch)
    resumed = anchors_for_samples(model, tokenizer, sid_map, prompts, cots, segments, store_dir, shard_size=2)
    assert calls == [2]
    for got, want in zip(resumed, extract_anchors(model, tokenizer, prompts, cots, segments)):
        torch.testing.assert_close(got, want)


def test_a_leftover_temp_file_is_ignored(tiny_recommender, tmp_path):
    model, tokenizer, sid_map = tiny_recommender
    fingerprint = model_fingerprint(model, tokenizer, sid_map)
    store = AnchorStore(tmp_path, fingerprint)
    store.add({"a": torch.ones(2, 32)})
    (tmp_path / ".anchors-p0-00001.safetensors.123.tmp").write_bytes(b"half a shard")
    reopened = AnchorStore(tmp_path, fingerprint)
    assert len(reopened) == 1
    reopened.add({"b": torch.zeros(1, 32)})
    stored = AnchorStore(tmp_path, fingerprint).get(["b", "a"])
    torch.testing.assert_close(stored, [torch.zeros(1, 32), torch.ones(2, 32)])
    with pytest.raises(ValueError, match=r"expected \(S, 32\)"):
        reopened.add({"c": torch.ones(2, 16)})


def other_hidden_size_model(tokenizer):
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        pad_token_id=tokenizer.pad_token_id,
    )
    return AutoModelForCausalLM.from_config(config)


@pytest.mark.parametrize("change", ["hidden size", "SID map", "bot row", "final norm"])
def test_a_store_of_another_model_or_sid_map_is_refused(tiny_recommender, tmp_path, change):
    model, tokenizer, sid_map = tiny_recommender
    AnchorStore(tmp_path, model_fingerprint(model, tokenizer, sid_map))
    if change == "hidden size":
        model = other_hidden_size_model(tokenizer)
    elif change == "SID map":
        tokens = {item: sid_map[item] for item in sid_map.item_ids}
        tokens["0"], tokens["1"] = tokens["1"], tokens["0"]
        sid_map = SidMap(tokens)
    else:  # Stage 1 trains the <bot> row; any fine-tune moves the final norm
        weight = (
            model.get_input_embeddings().weight[tokenizer.convert_tokens_to_ids(BOT_TOKEN)]
            if change == "bot row"
            else model.get_decoder().norm.weight
        )
        with torch.no_grad():
            weight += 0.01
    field = "model weights" if change in ("bot row", "final norm") else change
    with pytest.raises(AnchorMismatchError, match=f"{re.escape(str(tmp_path))}.*different {field}"):
        AnchorStore(tmp_path, model_fingerprint(model, tokenizer, sid_map))


def run_preprocess(processes: int, out_dir, cache_dir) -> list[dict]:
    worker = os.path.join(os.path.dirname(__file__), "preprocess_worker.py")
    launcher = (
        [sys.executable]
        if processes == 1
        else [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            str(processes),
            "--master_port",
            str(free_port()),
        ]
    )
    out_dir.mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.path.dirname(__file__), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [*launcher, worker, str(out_dir), str(cache_dir)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return [json.loads((out_dir / f"rank{rank}.json").read_text()) for rank in range(processes)]


@pytest.mark.slow
def test_two_processes_share_teaching_and_extraction_and_both_get_everything(smol_path, tmp_path):
    """Each process asks the teacher and extracts anchors for a disjoint share of the distinct
    samples, into its own cache files; both end with every sample, as one process computes them."""
    [single] = run_preprocess(1, tmp_path / "one", tmp_path / "cache-one")
    ranks = run_preprocess(2, tmp_path / "two", tmp_path / "cache-two")
    distinct = list(dict.fromkeys(single["asked"]))
    assert len(distinct) == 6 and sorted(ranks[0]["asked"] + ranks[1]["asked"]) == sorted(distinct)
    assert all(rank["asked"] for rank in ranks)  # each asked a share...
    assert sorted(ranks[0]["extracted"] + ranks[1]["extracted"]) == sorted(single["extracted"])
    assert all(rank["extracted"] for rank in ranks)  # ...and extracted a share
    cache = tmp_path / "cache-two"
    assert (cache / "teacher.jsonl").exists() and (cache / "teacher.1.jsonl").exists()
    assert {path.name.split("-")[1] for path in (cache / "anchors").glob("anchors-*.safetensors")} == {"p0", "p1"}
    for rank in ranks:
        assert rank["cots"] == single["cots"]
        for got, want in zip(rank["anchors"], single["anchors"]):
            torch.testing.assert_close(torch.tensor(got), torch.tensor(want))
    again = run_preprocess(2, tmp_path / "again", cache)
    assert all(not rank["asked"] and not rank["extracted"] for rank in again)
