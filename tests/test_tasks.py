import pytest

from lasar_trl.data import load_dataset_spec
from lasar_trl.data.schema import DataFormatError, RecData, Window
from lasar_trl.data.tasks import (
    PROMPT_TEMPLATE,
    check_items_known,
    history_prompt,
    recommendation_dataset,
    stage1_dataset,
)
from lasar_trl.sid import SidMap
from lasar_trl.sid.tokenizer import BOT_TOKEN


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
