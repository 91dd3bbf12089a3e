"""`lasar_trl.Recommender` and recipes/recommend.py on tiny checkpoint folders of every kind."""

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from trl import TrlParser

from lasar_trl import Recommender
from lasar_trl.data import DataFormatError
from lasar_trl.evaluation.recommend import recommend
from lasar_trl.modeling.checkpoint import save_recommender
from lasar_trl.modeling.lasar import LasarConfig, attach_lasar, get_lasar
from lasar_trl.stages.recommend import RecommendArguments, run

ROOT = Path(__file__).resolve().parents[1]
HISTORIES = [["1", "2", "3"], ["4"], [str(i) for i in range(5, 20)]]  # the last is longer than max_history 10


def save_folder(kind: str, model, tokenizer, sid_map, folder: Path):
    """A checkpoint folder of `kind` and the in-memory model it should recommend as."""
    if kind == "lasar":
        attach_lasar(model, LasarConfig(hidden_size=model.config.hidden_size, n_max=3, min_depth=1))
        torch.nn.init.normal_(get_lasar(model).policy_head.mlp[2].weight, std=3.0)  # spread the argmax over depths
    if kind != "lora":
        save_recommender(model, tokenizer, sid_map, str(folder))
        return model
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    save_recommender(model, tokenizer, sid_map, str(folder / "base"))
    base = AutoModelForCausalLM.from_pretrained(folder / "base")
    adapted = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    adapted.save_pretrained(folder / "adapter")
    tokenizer.save_pretrained(folder / "adapter")
    sid_map.save(folder / "adapter")
    return adapted.eval()


@pytest.mark.parametrize("kind", ["stage1", "lasar", "lora"])
def test_results_are_the_recommend_functions(tiny_recommender, tmp_path, kind):
    """From a Stage-1, a LASAR (Stage 2/3) or a LoRA adapter folder: the items, scores and depths of
    `recommend` on the last max_history items, with the whole history banned."""
    model, tokenizer, sid_map = tiny_recommender
    expected_model = save_folder(kind, model, tokenizer, sid_map, tmp_path)
    path = tmp_path / "adapter" if kind == "lora" else tmp_path
    recommender = Recommender.from_pretrained(str(path), device="cpu", max_history=10)
    got = recommender.recommend(HISTORIES, top_k=5, batch_size=2)
    expected = recommend(
        expected_model,
        tokenizer,
        sid_map,
        [h[-10:] for h in HISTORIES],
        top_k=5,
        num_beams=20,
        exclude_items=HISTORIES,
    )
    assert [r.items for r in got] == expected.items
    assert [r.depth for r in got] == expected.depths
    for rec, scores in zip(got, expected.scores):
        assert rec.scores == pytest.approx(scores, abs=1e-4)
        assert rec.titles == [None] * 5  # no catalog given


def test_exclude_seen_removes_the_history_items(tiny_recommender):
    model, tokenizer, sid_map = tiny_recommender
    recommender = Recommender(model, tokenizer, sid_map)
    history = sid_map.item_ids[:30]  # 30 of 40 items: the ten left must be the answer
    (seen_excluded,) = recommender.recommend([history], top_k=10)
    assert sorted(seen_excluded.items) == sorted(sid_map.item_ids[30:])
    (kept,) = recommender.recommend([history], top_k=10, exclude_seen=False)
    assert kept.items == recommend(model, tokenizer, sid_map, [history[-10:]], top_k=10).items[0]


def test_titles_come_from_the_catalog_which_must_hold_every_item(tiny_recommender):
    model, tokenizer, sid_map = tiny_recommender
    catalog = {item: {"title": f"Movie {item}"} for item in sid_map.item_ids}
    catalog["7"] = {}  # no title: None
    (rec,) = Recommender(model, tokenizer, sid_map, catalog=catalog).recommend([["1", "2"]], top_k=40)
    assert rec.titles == [None if item == "7" else f"Movie {item}" for item in rec.items]
    del catalog["9"]
    with pytest.raises(ValueError, match="lacks 1 of the checkpoint's 40 items, e.g. '9'"):
        Recommender(model, tokenizer, sid_map, catalog=catalog)


def test_unknown_items_and_malformed_histories_are_named(tiny_recommender):
    recommender = Recommender(*tiny_recommender)
    with pytest.raises(ValueError, match=r"history 1: item 'nope' is not in the checkpoint's SID map \(2 unknown"):
        recommender.recommend([["1"], ["2", "nope", "gone", "nope"]])
    with pytest.raises(ValueError, match="history 0 is empty"):
        recommender.recommend([[]])
    with pytest.raises(TypeError, match="list of histories"):
        recommender.recommend(["1", "2"])


def test_depth_above_n_max_is_refused_and_warned_on_a_checkpoint_without_latent_steps(tiny_recommender, caplog):
    model, tokenizer, sid_map = tiny_recommender
    plain = Recommender(model, tokenizer, sid_map)
    with caplog.at_level(logging.WARNING):
        (rec,) = plain.recommend([["1"]], top_k=3, depth=2)
    assert rec.depth == 2 and "never trained with latent steps" in caplog.text
    attach_lasar(model, LasarConfig(hidden_size=model.config.hidden_size, n_max=3, min_depth=1))
    lasar = Recommender(model, tokenizer, sid_map)
    assert lasar.recommend([["1"]], top_k=3, depth=3)[0].depth == 3
    with pytest.raises(ValueError, match=r"depth 4 is above n_max=3 of this checkpoint"):
        lasar.recommend([["1"]], depth=4)
    with pytest.raises(ValueError, match="depth must be >= 0"):
        lasar.recommend([["1"]], depth=-1)


@pytest.fixture
def checkpoint(tiny_recommender, tmp_path):
    save_recommender(*tiny_recommender, str(tmp_path / "ckpt"))
    return tmp_path / "ckpt"


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def parse(*argv: str) -> RecommendArguments:
    (args,) = TrlParser(RecommendArguments).parse_args_and_config(args=list(argv))
    return args


def test_cli_round_trip_skips_and_counts_unknown_items(checkpoint, tiny_recommender, tmp_path, capsys):
    """The command of docs/evaluation.md, in-process: every known line answered in order, with its
    line number and input fields; the unknown one reported by line and counted; every item real."""
    sid_map = tiny_recommender[2]
    requests = write_lines(
        tmp_path / "histories.jsonl",
        [
            '{"user": "a", "history": ["1", "2", "3"]}',
            '{"user": "b", "history": ["4", "unknown-item"]}',
            "",
            '{"user": "c", "history": [5, 6]}',  # integer ids are the dataset's ids
        ],
    )
    output = tmp_path / "recs.jsonl"
    args = parse(
        "--checkpoint",
        str(checkpoint),
        "--input",
        str(requests),
        "--output",
        str(output),
        "--top_k",
        "10",
        "--on_unknown",
        "skip",
        "--device",
        "cpu",
    )
    assert run(args) == {"written": 2, "skipped": 1}
    assert "histories.jsonl line 2: item ids not in the checkpoint's SID map: ['unknown-item']; skipped" in (
        capsys.readouterr().err
    )
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert [(row["user"], row["line"]) for row in rows] == [("a", 1), ("c", 4)]
    expected = Recommender(*tiny_recommender).recommend([["1", "2", "3"], ["5", "6"]], top_k=10)
    for row, rec in zip(rows, expected):
        assert row["items"] == rec.items and row["depth"] == rec.depth
        assert row["scores"] == pytest.approx(rec.scores, abs=1e-5)
        assert len(row["items"]) == 10 and set(row["items"]) <= set(sid_map.item_ids)
        assert not set(row["items"]) & set(map(str, row["history"]))
        assert row["titles"] == [None] * 10
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left


def test_cli_stop_mode_names_the_line_and_keeps_the_earlier_output(checkpoint, tmp_path):
    requests = write_lines(tmp_path / "in.jsonl", ['{"history": ["1"]}', '{"history": ["2", "x"]}'])
    output = tmp_path / "recs.jsonl"
    output.write_text("earlier run\n")
    args = parse("--checkpoint", str(checkpoint), "--input", str(requests), "--output", str(output), "--overwrite")
    with pytest.raises(DataFormatError, match=r"in.jsonl line 2: .*\['x'\]; pass --on_unknown skip"):
        run(args)
    assert output.read_text() == "earlier run\n"


def test_cli_refuses_an_existing_output_without_overwrite_and_a_missing_input(checkpoint, tmp_path):
    requests = write_lines(tmp_path / "in.jsonl", ['{"history": ["1"]}'])
    output = tmp_path / "recs.jsonl"
    output.write_text("earlier run\n")
    args = parse("--checkpoint", str(checkpoint), "--input", str(requests), "--output", str(output))
    with pytest.raises(FileExistsError, match="--output .*recs.jsonl already exists: pass --overwrite"):
        run(args)
    assert output.read_text() == "earlier run\n"
    args = parse("--checkpoint", str(checkpoint), "--input", str(tmp_path / "none.jsonl"), "--output", "out.jsonl")
    with pytest.raises(FileNotFoundError, match="--input .*none.jsonl does not exist"):
        run(args)


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"history": ["1"]', "not valid JSON"),
        ('["1", "2"]', "expected an object with 'history', got list"),
        ('{"items": ["1"]}', "'history' must be a non-empty list of item ids"),
        ('{"history": []}', "'history' must be a non-empty list"),
        ('{"history": ["1", true]}', "'history' must be a non-empty list"),
        ('{"history": ["1"], "history": ["2"]}', "key 'history' appears more than once"),
        ('{"history": ["1"], "scores": 3}', "field 'scores' is one the output writes"),
    ],
)
def test_cli_names_a_malformed_line(checkpoint, tmp_path, line, message):
    requests = write_lines(tmp_path / "in.jsonl", ['{"history": ["1"]}', "", line])
    args = parse("--checkpoint", str(checkpoint), "--input", str(requests), "--output", str(tmp_path / "out.jsonl"))
    with pytest.raises(DataFormatError, match=f"in.jsonl line 3: {message}"):
        run(args)
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.slow  # a fresh interpreter importing torch, transformers and TRL
def test_recipe_help_runs():
    result = subprocess.run(
        [sys.executable, str(ROOT / "recipes" / "recommend.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert "--on_unknown" in result.stdout and "--overwrite" in result.stdout


def test_max_history_is_the_checkpoints_unless_given_and_10_with_a_warning_when_unrecorded(
    tiny_recommender, tmp_path, caplog
):
    """A checkpoint trained with max_history 3 prompts with the last 3 items; an explicit value wins;
    a folder from before the record falls back to 10 and says so."""
    model, tokenizer, sid_map = tiny_recommender
    save_recommender(model, tokenizer, sid_map, str(tmp_path / "unrecorded"))
    model.config.max_history = 3
    save_recommender(model, tokenizer, sid_map, str(tmp_path / "recorded"))
    history = [str(i) for i in range(1, 13)]

    with caplog.at_level(logging.WARNING):
        recorded = Recommender.from_pretrained(str(tmp_path / "recorded"), device="cpu")
    assert recorded.max_history == 3 and "records no max_history" not in caplog.text
    (rec,) = recorded.recommend([history], top_k=5, exclude_seen=False)
    assert rec.items == recommend(model, tokenizer, sid_map, [history[-3:]], top_k=5, num_beams=20).items[0]
    assert Recommender.from_pretrained(str(tmp_path / "recorded"), device="cpu", max_history=7).max_history == 7

    with caplog.at_level(logging.WARNING):
        unrecorded = Recommender.from_pretrained(str(tmp_path / "unrecorded"), device="cpu")
    assert unrecorded.max_history == 10
    assert "records no max_history" in caplog.text and "prompting with the last 10 items" in caplog.text
    with pytest.raises(ValueError, match="max_history must be >= 1, got 0"):
        Recommender(model, tokenizer, sid_map, max_history=0)
