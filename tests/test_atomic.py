"""lasar_trl.atomic: atomic writes of files and folders, and the strict JSON reader."""

import json

import pytest

from lasar_trl.atomic import (
    DuplicateKeyError,
    atomic_entries,
    atomic_path,
    read_json_object,
    reject_duplicate_keys,
    write_json_atomic,
)


def names(folder) -> set[str]:
    return {path.name for path in folder.iterdir()}


def test_a_file_is_renamed_into_place_and_nothing_else_is_left(tmp_path):
    target = tmp_path / "sub" / "out.safetensors"
    with atomic_path(target) as temp:
        assert temp.name == target.name and not temp.exists() and not target.exists()
        temp.write_text("new")
    assert target.read_text() == "new"
    assert names(target.parent) == {"out.safetensors"}


def test_a_failed_write_leaves_neither_a_partial_target_nor_a_temp_file(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError), atomic_path(target) as temp:
        temp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert names(tmp_path) == set()
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as temp:
        temp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "old" and names(tmp_path) == {"out.json"}


def test_a_folder_replaces_an_existing_one_only_when_asked(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "old.bin").write_text("old")
    with atomic_path(target, replace=False) as temp:
        temp.mkdir()
        (temp / "new.bin").write_text("new")
    assert names(target) == {"old.bin"}  # the existing folder won, the new one is dropped
    with atomic_path(target) as temp:
        temp.mkdir()
        (temp / "new.bin").write_text("new")
    assert names(target) == {"new.bin"}  # replaced whole, nothing of the old one merged in
    assert names(tmp_path) == {"model"}


def test_a_failed_folder_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "model") as temp:
        temp.mkdir()
        (temp / "weights.bin").write_text("half")
        raise RuntimeError("crash mid-save")
    assert names(tmp_path) == set()


def test_entries_move_into_a_folder_and_keep_its_other_contents(tmp_path):
    (tmp_path / "checkpoint-1").mkdir()
    (tmp_path / "config.json").write_text("old")
    with atomic_entries(tmp_path) as staging:
        (staging / "config.json").write_text("new")
        (staging / "model.safetensors").write_text("weights")
    assert names(tmp_path) == {"checkpoint-1", "config.json", "model.safetensors"}
    assert (tmp_path / "config.json").read_text() == "new"
    with pytest.raises(RuntimeError), atomic_entries(tmp_path) as staging:
        (staging / "config.json").write_text("half")
        raise RuntimeError("crash mid-save")
    assert names(tmp_path) == {"checkpoint-1", "config.json", "model.safetensors"}
    assert (tmp_path / "config.json").read_text() == "new"


def test_json_round_trip_replaces_the_previous_file(tmp_path):
    path = tmp_path / "report.json"
    write_json_atomic(path, {"a": 1})
    write_json_atomic(path, {"é": [1, 2]})
    assert read_json_object(path) == {"é": [1, 2]}
    assert names(tmp_path) == {"report.json"}


@pytest.mark.parametrize("text", ['{"1": "x", "2": "y", "1": "z"}', '{"outer": {"1": 0, "1": 1}}'])
def test_a_repeated_key_at_any_depth_names_the_file_and_the_key(tmp_path, text):
    path = tmp_path / "sid_map.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=r"sid_map\.json: key '1' appears more than once"):
        read_json_object(path)


def test_the_duplicate_key_hook_gives_the_key_to_readers_with_their_own_context():
    with pytest.raises(DuplicateKeyError) as error:
        json.loads('{"a": 1, "b": 2, "b": 3}', object_pairs_hook=reject_duplicate_keys)
    assert error.value.key == "b"


@pytest.mark.parametrize("text, problem", [("[1, 2]", "expected a JSON object, got list"), ("{", "not valid JSON")])
def test_other_bad_json_names_the_file(tmp_path, text, problem):
    path = tmp_path / "stats.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=rf"stats\.json: {problem}"):
        read_json_object(path)
