"""Evaluation runs: what `exclude_history` bans, the most-popular baseline on real data, and the
history length recipes/evaluate.py prompts with."""

import logging

import pytest
from trl import TrlParser

from lasar_trl.data import load_dataset_spec
from lasar_trl.data.schema import RecData, Window
from lasar_trl.evaluation.evaluate import most_popular_baseline
from lasar_trl.modeling.checkpoint import save_recommender
from lasar_trl.stages import evaluate as evaluate_stage
from lasar_trl.stages.evaluate import EvaluateArguments


def test_seen_items_is_the_whole_earlier_sequence_not_the_prompt_window(tiny_recbole_dir):
    data = load_dataset_spec(f"recbole:{tiny_recbole_dir}", max_history=3)
    sequence = data.sequences["1"]
    test_window = next(w for w in data.splits["test"] if w.user_id == "1")
    assert len(test_window.history) == 3
    assert data.seen_items("test", test_window) == tuple(sequence[:-1])
    validation_window = next(w for w in data.splits["validation"] if w.user_id == "1")
    assert data.seen_items("validation", validation_window) == tuple(sequence[:-2])
    with pytest.raises(ValueError, match="not 'train'"):
        data.seen_items("train", data.splits["train"][0])
    windowed = RecData("w", {}, {"test": [Window("u", ("a", "b"), "c")]})
    assert windowed.seen_items("test", windowed.splits["test"][0]) == ("a", "b")


def test_most_popular_bans_seen_items_by_hand():
    windows = [Window("u", ("x",), "y"), Window("v", ("z",), "x")]
    data = RecData("t", {}, {"train": [Window("u", ("a",), t) for t in "xxxyyz"]})
    plain = most_popular_baseline(data, windows)
    banned = most_popular_baseline(data, windows, exclude_items=[["x"], ["z"]])
    # popularity x > y > z: without bans y ranks 2nd and x 1st; banning x lifts y to 1st
    assert plain["hr@1"] == 0.5 and plain["ndcg@5"] == pytest.approx((1 / 1.5849625 + 1) / 2, rel=1e-6)
    assert banned["hr@1"] == 1.0 and banned["exclude_history"] is True


@pytest.mark.shared_data
def test_most_popular_on_ml100k_matches_the_reference_numbers(shared_data_dir):
    """Measured on this split: HR@10 .0498 without exclusion and .0859 with it."""
    data = load_dataset_spec(f"recbole:{shared_data_dir / 'ml-100k'}")
    windows = data.splits["test"]
    plain = most_popular_baseline(data, windows)
    excluded = most_popular_baseline(data, windows, exclude_items=[data.seen_items("test", w) for w in windows])
    assert plain["hr@10"] == pytest.approx(0.0498, abs=5e-4)
    assert excluded["hr@10"] == pytest.approx(0.0859, abs=5e-4)
    assert excluded["ndcg@10"] == pytest.approx(0.0449, abs=2e-3)


@pytest.mark.parametrize("recorded, given, expected", [(3, None, 3), (3, 5, 5), (None, None, 10)])
def test_evaluate_prompts_with_the_checkpoints_max_history_unless_given(
    tiny_recommender, tiny_recbole_dir, tmp_path, monkeypatch, caplog, recorded, given, expected
):
    """recipes/evaluate.py: --max_history defaults to the one the checkpoint records (10, with a
    warning, for a checkpoint that records none), and shapes both the data and the prompts."""
    model, tokenizer, sid_map = tiny_recommender
    if recorded is not None:
        model.config.max_history = recorded
    save_recommender(model, tokenizer, sid_map, str(tmp_path / "ckpt"))
    seen = {}

    def record(model, tokenizer, sid_map, data, script_args, **kwargs):
        seen["script"] = script_args.max_history
        seen["longest"] = max(len(w.history) for w in data.splits["test"])

    monkeypatch.setattr(evaluate_stage, "evaluate_and_report", record)
    flags = [] if given is None else ["--max_history", str(given)]
    (args,) = TrlParser(EvaluateArguments).parse_args_and_config(
        args=["--checkpoint", str(tmp_path / "ckpt"), "--dataset", f"recbole:{tiny_recbole_dir}", *flags]
    )
    with caplog.at_level(logging.WARNING):
        evaluate_stage.run(args)
    assert seen == {"script": expected, "longest": min(expected, 7)}  # a tiny test history holds 7 items
    assert ("records no max_history" in caplog.text) == (recorded is None and given is None)
