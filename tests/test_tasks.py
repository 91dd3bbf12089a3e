import pytest
import torch
from testing_utils import make_tiny_model

from lasar_trl.configs import RecScriptArguments
from lasar_trl.data import load_dataset_spec
from lasar_trl.data.schema import DataFormatError, RecData, Window
from lasar_trl.data.splits import leave_one_out
from lasar_trl.sid import SidMap
from lasar_trl.sid.tokenizer import BOT_TOKEN
from lasar_trl.stages.common import cpu_threads, end_run
from lasar_trl.tasks import (
    PROMPT_TEMPLATE,
    chain_windows,
    check_items_known,
    history_prompt,
    recommendation_dataset,
    sequence_chunks,
    stage1_dataset,
    stage1_sequence_dataset,
    tokenized_pair,
)


@pytest.fixture
def sid_map():
    return SidMap({"1": ("<a_0>", "<b_1>"), "2": ("<a_1>", "<b_0>"), "3": ("<a_1>", "<b_1>")})


def test_history_prompt_is_the_default_template_then_bot(sid_map):
    prompt = history_prompt(["1", "2"], sid_map)
    assert prompt == PROMPT_TEMPLATE.format(history="<a_0><b_1>, <a_1><b_0>") + BOT_TOKEN
    assert prompt.startswith("A user interacted with these items, oldest first: <a_0><b_1>")
    with pytest.raises(DataFormatError, match="empty history"):
        history_prompt([], sid_map)


def test_task_mix_with_and_without_text(sid_map):
    windows = [Window("u", ("1",), "2"), Window("u", ("1", "2"), "3")]
    catalog = {"1": {"title": "Alpha"}, "2": {"title": "Beta"}, "3": {"title": "Gamma"}}
    with_text = RecData("t", catalog, {"train": windows, "validation": [], "test": []})
    dataset = stage1_dataset(with_text, sid_map, title_history_fraction=1.0)
    # 2 windows + 3 title->SID + 3 SID->title + 2 title histories
    assert len(dataset) == 10
    assert {"prompt": history_prompt(("1",), sid_map), "completion": "<a_1><b_0>"} in dataset.to_list()
    assert any(row["completion"] == " Gamma" for row in dataset)
    no_text = RecData("n", {i: {} for i in catalog}, {"train": windows, "validation": [], "test": []})
    assert len(stage1_dataset(no_text, sid_map)) == 2
    main_task = recommendation_dataset(windows, sid_map)
    assert main_task["target"] == ["2", "3"] and main_task["completion"] == ["<a_1><b_0>", "<a_1><b_1>"]


def test_items_without_sid_are_reported(sid_map, tiny_recbole_dir):
    data = RecData("t", {}, {"train": [Window("u7", ("1", "9"), "2")], "validation": [], "test": []})
    with pytest.raises(DataFormatError, match=r"train sample 0 \(user u7\): item '9' has no SID"):
        check_items_known(data, sid_map)
    with pytest.raises(DataFormatError, match="has no SID"):
        check_items_known(load_dataset_spec(f"recbole:{tiny_recbole_dir}"), sid_map)


def test_compact_prompt_is_sids_each_followed_by_bot(sid_map):
    assert history_prompt(["1", "2"], sid_map, "compact") == "<a_0><b_1><bot><a_1><b_0><bot>"
    with pytest.raises(ValueError, match="prompt template must be one of"):
        history_prompt(["1"], sid_map, "french")
    with pytest.raises(ValueError, match="stage1_layout=sequences needs prompt_template=compact"):
        RecScriptArguments(stage1_layout="sequences")


@pytest.mark.parametrize("max_history", [1, 2, 3, 4, 7, 50])
@pytest.mark.parametrize("length", [2, 3, 5, 9, 23])
def test_sequence_chunks_cover_every_target_once_with_bounded_history(length, max_history):
    chunks = sequence_chunks(length, first_target=1, max_history=max_history)
    targets = [j for start, end, first_loss in chunks for j in range(first_loss, end)]
    assert targets == list(range(1, length))
    for start, end, first_loss in chunks:
        assert end - start <= max_history + 1 and start < first_loss
        assert all(j - start >= min(j, max(1, max_history // 2)) for j in range(first_loss, end))


def test_sequence_chunks_by_hand():
    # 10 items, history limit 4: the first pass is items 0-4; then passes of 2 new targets, each with 4 items before
    assert sequence_chunks(10, 1, 4) == [(0, 5, 1), (2, 7, 5), (4, 9, 7), (5, 10, 9)]
    assert sequence_chunks(4, 2, 10) == [(0, 4, 2)]  # a pre-windowed row: its history, then targets


def test_chain_windows_rebuilds_leave_one_out_sequences():
    sequences = {"u": [str(i) for i in range(8)], "v": ["3", "1", "2", "0"]}
    windows = leave_one_out(sequences, max_history=3)["train"]
    assert chain_windows(windows, 3) == [([str(i) for i in range(6)], 1), (["3", "1"], 1)]
    other = [Window("u", ("5", "6"), "7"), Window("u", ("1",), "2")]  # not a continuation: chains of their own
    assert chain_windows(other, 3) == [(["5", "6", "7"], 2), (["1", "2"], 1)]


def test_sequence_rows_give_the_windows_per_item_losses(smol_tokenizer, tiny_sid_map):
    """One causal pass over a user's sequence scores every target's SID tokens exactly as the
    compact window row that predicts it (TRL's tokenization of prompt + completion)."""
    from lasar_trl.sid.tokenizer import add_sid_tokens

    model = make_tiny_model(smol_tokenizer)
    add_sid_tokens(model, smol_tokenizer, tiny_sid_map)
    model.eval()
    items = tiny_sid_map.item_ids[:7]
    splits = leave_one_out({"u": items}, max_history=10)
    data = RecData("t", {i: {} for i in tiny_sid_map.item_ids}, splits)
    rows = stage1_sequence_dataset(data, tiny_sid_map, smol_tokenizer, max_history=10)
    assert len(rows) == 1  # 4 training targets, one pass

    def label_logprobs(input_ids, labels):
        with torch.no_grad():
            logits = model(torch.tensor([input_ids])).logits[0, :-1].float()
        targets = torch.tensor(labels[1:])
        keep = targets != -100
        return torch.log_softmax(logits[keep], -1).gather(-1, targets[keep, None]).squeeze(-1)

    sequence = label_logprobs(rows[0]["input_ids"], rows[0]["labels"])
    length = tiny_sid_map.sid_length
    for k, window in enumerate(splits["train"]):
        pair = tokenized_pair(
            smol_tokenizer, history_prompt(window.history, tiny_sid_map, "compact"), tiny_sid_map.sid(window.target)
        )
        assert (
            pair["input_ids"][: len(pair["input_ids"]) - length - 1]
            == rows[0]["input_ids"][: len(pair["input_ids"]) - length - 1]
        )  # the window's prompt is a prefix of the sequence
        window_logprobs = label_logprobs(pair["input_ids"], pair["labels"])[:length]  # its SID tokens, not eos
        torch.testing.assert_close(window_logprobs, sequence[k * length : (k + 1) * length], atol=1e-5, rtol=0)


def test_cpu_threads_respects_the_users_setting():
    assert cpu_threads({}, cores=8, current=1) == 8
    assert cpu_threads({"OMP_NUM_THREADS": "2"}, cores=8, current=2) == 2
    # accelerate launch exports OMP_NUM_THREADS=1 when the user set nothing; a user's value passes through
    assert cpu_threads({"OMP_NUM_THREADS": "1", "ACCELERATE_MIXED_PRECISION": "no"}, cores=8, current=1) == 8
    assert cpu_threads({"OMP_NUM_THREADS": "3", "ACCELERATE_MIXED_PRECISION": "no"}, cores=8, current=3) == 3
    assert cpu_threads({"LASAR_NUM_THREADS": "4", "OMP_NUM_THREADS": "1"}, cores=8, current=1) == 4
    assert cpu_threads({"LOCAL_WORLD_SIZE": "2"}, cores=8, current=1) == 1


def test_end_run_closes_the_process_group_and_is_a_no_op_without_one(tmp_path):
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    end_run()
    assert not torch.distributed.is_initialized()
    end_run()  # a single-process run never made one
