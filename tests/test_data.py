"""Data loaders and splits: real shared datasets (skipped when absent) and small synthetic files."""

from __future__ import annotations

import gzip
import importlib.util
import json
import re
from pathlib import Path

import pytest

from lasar_trl.data import SPLITS, DataFormatError, RecData, Window, leave_one_out, load_dataset_spec


def where(path: Path, line: int, field: str, problem: str = "") -> str:
    """Regex for an error message that names the file, the line and the field, then the problem."""
    return re.escape(f"{path}, line {line}, field {field!r}") + ".*" + re.escape(problem)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def shared(root: Path, folder: str) -> Path:
    path = root / folder
    if not path.exists():
        pytest.skip(f"{path} is absent")
    return path


def assert_histories_capped(data: RecData, max_history: int) -> None:
    for split in SPLITS:
        assert all(1 <= len(w.history) <= max_history for w in data.splits[split])


# ---------------------------------------------------------------------------------------------
# Real shared datasets


@pytest.fixture(scope="module")
def ml100k(shared_data_dir: Path) -> RecData:
    return load_dataset_spec(f"recbole:{shared(shared_data_dir, 'ml-100k')}")


@pytest.mark.shared_data
def test_ml100k_counts_and_titles(ml100k: RecData) -> None:
    assert ml100k.name == "ml-100k"
    assert ml100k.stats["users"] == 943
    assert ml100k.stats["items"] == len(ml100k.catalog) == 1682
    assert ml100k.stats["interactions"] == 100_000
    assert len(ml100k.splits["test"]) == len(ml100k.splits["validation"]) == 943
    assert ml100k.stats["train_samples"] == 100_000 - 943 * 3  # every user has at least 20 ratings
    assert ml100k.has_text
    genres = "Animation Children's Comedy"  # token_seq values are kept as written
    assert ml100k.catalog["1"] == {"title": "Toy Story", "year": "1995", "categories": genres}
    assert_histories_capped(ml100k, 10)
    assert ml100k.as_dataset("test").num_rows == 943


@pytest.mark.shared_data
def test_ml100k_test_target_is_latest_rating(ml100k: RecData, shared_data_dir: Path) -> None:
    """The test target is a rating with the user's largest timestamp (ties broken by file order)."""
    latest: dict[str, tuple[float, str]] = {}
    with open(shared_data_dir / "ml-100k" / "ml-100k.inter", encoding="utf-8") as handle:
        next(handle)
        for line in handle:
            user, item, _, stamp = line.split("\t")
            if user not in latest or float(stamp) >= latest[user][0]:
                latest[user] = (float(stamp), item)
    targets = {w.user_id: w.target for w in ml100k.splits["test"]}
    assert targets == {user: item for user, (_, item) in latest.items()}


def test_embedded_ml100k_from_recbole_wheel() -> None:
    if importlib.util.find_spec("recbole") is None:
        pytest.skip("recbole is not installed (pip install --no-deps recbole==1.2.1)")
    data = load_dataset_spec("ml-100k", max_history=5)
    assert (data.name, data.stats["users"], len(data.catalog)) == ("ml-100k", 943, 1682)
    assert len(data.splits["test"]) == 943
    assert data.catalog["1"]["title"] == "Toy Story"
    assert_histories_capped(data, 5)


def test_embedded_ml100k_without_recbole_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, package=None: None)
    with pytest.raises(DataFormatError, match=re.escape("pip install --no-deps recbole==1.2.1")):
        load_dataset_spec("ml-100k")


@pytest.mark.shared_data
def test_industrial_minionerec(shared_data_dir: Path) -> None:
    data = load_dataset_spec(f"minionerec:{shared(shared_data_dir, 'amazon18_industrial')}")
    assert data.name == "Industrial_and_Scientific"
    assert data.sequences is None
    assert len(data.splits["train"]) + len(data.splits["validation"]) == 4532
    assert len(data.splits["validation"]) == round(4532 * 0.05) == 227
    assert len(data.splits["test"]) == 4533
    assert len(data.catalog) == 3686 and data.has_text
    assert data.shipped_sids is not None and set(data.shipped_sids) == set(data.catalog)
    assert {len(tokens) for tokens in data.shipped_sids.values()} == {3}
    assert_histories_capped(data, 10)
    first = data.splits["train"][0]
    assert (first.user_id, first.history, first.target) == ("A4042", ("3112",), "114")


@pytest.mark.shared_data
def test_beauty_letter(shared_data_dir: Path) -> None:
    data = load_dataset_spec(f"letter:{shared(shared_data_dir, 'beauty_p5_letter')}")
    assert data.name == "Beauty"
    assert (data.stats["users"], data.stats["items"], data.stats["interactions"]) == (22363, 12101, 198502)
    assert len(data.splits["test"]) == len(data.splits["validation"]) == 22363
    assert data.shipped_sids is not None and {len(t) for t in data.shipped_sids.values()} == {4}
    assert not data.has_text
    assert data.sequences is not None and data.sequences["0"][:5] == ["0", "1", "2", "3", "4"]


@pytest.mark.shared_data
def test_sports_p5(shared_data_dir: Path) -> None:
    data = load_dataset_spec(f"p5:{shared(shared_data_dir, 'sports_p5')}")
    assert data.name == "sports_p5"
    assert (data.stats["users"], data.stats["items"], data.stats["interactions"]) == (35598, 18357, 296337)
    assert len(data.splits["test"]) == 35598
    assert data.shipped_sids is None and not data.has_text


# ---------------------------------------------------------------------------------------------
# Leave-one-out


def test_leave_one_out_exact_windows() -> None:
    sequences = {"long": list("abcdef"), "one": ["x"], "two": ["x", "y"], "three": ["x", "y", "z"]}
    splits = leave_one_out(sequences, max_history=2)
    assert splits["train"] == [
        Window("long", ("a",), "b"),
        Window("long", ("a", "b"), "c"),
        Window("long", ("b", "c"), "d"),
    ]
    assert splits["validation"] == [Window("long", ("c", "d"), "e"), Window("three", ("x",), "y")]
    assert splits["test"] == [
        Window("long", ("d", "e"), "f"),
        Window("two", ("x",), "y"),
        Window("three", ("x", "y"), "z"),
    ]


def test_leave_one_out_rejects_zero_history() -> None:
    with pytest.raises(ValueError, match="max_history"):
        leave_one_out({"u": ["a", "b"]}, max_history=0)


# ---------------------------------------------------------------------------------------------
# RecBole atomic files

INTER_HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
ITEM_HEADER = "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\tprice:float\tstudio:token\n"


def write_recbole(directory: Path, inter_rows: str, item_rows: str | None = None) -> Path:
    write(directory / "toy.inter", INTER_HEADER + inter_rows)
    if item_rows is not None:
        write(directory / "toy.item", ITEM_HEADER + item_rows)
    return directory


def test_recbole_ties_keep_file_order_and_text_fields(tmp_path: Path) -> None:
    directory = write_recbole(
        tmp_path,
        "u2\ti9\t1\t7\nu1\ti3\t1\t5\nu1\ti1\t1\t1\nu1\ti2\t1\t5\nu1\ti4\t1\t1\nu2\ti1\t1\t3\n",
        "i1\tOne\t1990\tDrama Comedy\t9.5\tACME\n"
        "i2\tTwo\t\tHorror\t1\t\n"
        "i3\tThree\t1991\tDrama\t1\tACME\n"
        "i4\tFour\t1992\tDrama\t1\tACME\n"
        "i9\tNine\t1999\tDrama\t1\tACME\n"
        "i8\tUnrated\t1998\tDrama\t1\tACME\n",
    )
    data = load_dataset_spec(f"recbole:{directory}", max_history=10)
    assert data.name == "toy"
    assert data.sequences == {"u2": ["i1", "i9"], "u1": ["i1", "i4", "i3", "i2"]}
    i1_text = {"title": "One", "year": "1990", "categories": "Drama Comedy", "studio": "ACME"}
    assert data.catalog["i1"] == i1_text  # float columns (price) are not text
    assert data.catalog["i2"] == {"title": "Two", "categories": "Horror"}
    assert "i8" not in data.catalog
    assert data.stats == {
        "items_without_interactions": 1,
        "users": 2,
        "items": 5,
        "interactions": 6,
        "users_too_short": 0,
        "train_samples": 1,
        "validation_samples": 1,
        "test_samples": 2,
    }
    assert data.splits["test"] == [Window("u2", ("i1",), "i9"), Window("u1", ("i1", "i4", "i3"), "i2")]


def test_recbole_without_item_file_and_single_item_user(tmp_path: Path) -> None:
    directory = write_recbole(tmp_path, "a\tx\t1\t1\nb\tx\t1\t1\nb\ty\t1\t2\n")
    data = load_dataset_spec(f"recbole:{directory}")
    assert data.catalog == {"x": {}, "y": {}}
    assert data.stats["users_too_short"] == 1
    assert data.splits["test"] == [Window("b", ("x",), "y")]


def test_loading_is_deterministic(tmp_path: Path) -> None:
    rows = "".join(f"u{u % 7}\ti{(u * 13) % 11}\t1\t{u % 5}\n" for u in range(200))
    spec = f"recbole:{write_recbole(tmp_path, rows)}"
    first, second = load_dataset_spec(spec), load_dataset_spec(spec)
    assert first.splits == second.splits and list(first.catalog) == list(second.catalog)
    assert [w.user_id for w in first.splits["test"]] == [f"u{u}" for u in range(7)]  # first appearance


@pytest.mark.parametrize(
    ("inter_rows", "line", "field", "problem"),
    [
        ("u\ti1\t1\t1\nu\ti1\t1\n", 3, "timestamp", "missing"),
        ("u\ti1\t1\t1\t9\n", 2, "timestamp", "extra values"),
        ("u\ti1\t1\tyesterday\n", 2, "timestamp", "not a finite number"),
        ("u\ti1\t1\t1\nu\tnope\t1\t2\n", 3, "item_id", "not in"),
        ("\ti1\t1\t1\n", 2, "user_id", "empty id"),
    ],
)
def test_recbole_bad_rows(tmp_path: Path, inter_rows: str, line: int, field: str, problem: str) -> None:
    write_recbole(tmp_path, inter_rows, "i1\tOne\t1990\tDrama\t1\tACME\n")
    with pytest.raises(DataFormatError, match=where(tmp_path / "toy.inter", line, field, problem)):
        load_dataset_spec(f"recbole:{tmp_path}")


def test_recbole_missing_column(tmp_path: Path) -> None:
    write(tmp_path / "toy.inter", "user_id:token\titem_id:token\trating:float\nu\ti\t1\n")
    expected = where(tmp_path / "toy.inter", 1, "timestamp", "missing required column")
    with pytest.raises(DataFormatError, match=expected):
        load_dataset_spec(f"recbole:{tmp_path}")


def test_recbole_duplicate_item_names_both_lines(tmp_path: Path) -> None:
    items = "i1\tOne\t1\tA\t1\tB\ni2\tTwo\t1\tA\t1\tB\ni1\tAgain\t1\tA\t1\tB\n"
    write_recbole(tmp_path, "u\ti1\t1\t1\n", items)
    with pytest.raises(DataFormatError, match=where(tmp_path / "toy.item", 4, "item_id", "first on line 2")):
        load_dataset_spec(f"recbole:{tmp_path}")


# ---------------------------------------------------------------------------------------------
# MiniOneRec

CSV_HEADER = "user_id,history_item_title,item_title,history_item_id,item_id,history_item_sid,item_sid\n"


def write_minionerec(directory: Path, valid_rows: list[str], test_rows: list[str]) -> Path:
    text = {"brand": "B", "categories": "", "description": ""}  # empty fields are dropped
    items = {str(i): {"title": f'Item {i}, "quoted"', **text} for i in range(6)}
    items["5"]["description"] = "['First part.', 'Second part.']"  # MiniOneRec's list literals
    sids = {str(i): [f"<a_{i}>", "<b_0>"] for i in range(6)}
    write(directory / "index" / "Toy.item.json", json.dumps(items, indent=2))
    write(directory / "index" / "Toy.index.json", json.dumps(sids))
    write(directory / "valid" / "Toy.csv", CSV_HEADER + "".join(valid_rows))
    write(directory / "test" / "Toy.csv", CSV_HEADER + "".join(test_rows))
    return directory


def csv_row(user: str, history: str, target: str) -> str:
    return f'{user},"[\'a, b\', \'c\']","x, ""y""",{history},{target},"[\'<a_1>\']",<a_2>\n'


def test_minionerec_synthetic(tmp_path: Path) -> None:
    valid = [csv_row(f"U{i}", '"[0, 1, 2, 3]"', str(i % 6)) for i in range(20)]
    directory = write_minionerec(tmp_path, valid, [csv_row("U0", "\"['4', 5]\"", "0")])
    data = load_dataset_spec(f"minionerec:{directory}", max_history=2)
    assert data.name == "Toy" and data.sequences is None
    assert [len(data.splits[s]) for s in SPLITS] == [19, 1, 1]
    assert data.splits["validation"] == [Window("U19", ("2", "3"), "1")]
    assert data.splits["test"] == [Window("U0", ("4", "5"), "0")]
    assert data.catalog["0"] == {"title": 'Item 0, "quoted"', "brand": "B"}
    assert data.catalog["5"]["description"] == "First part. Second part."
    assert data.shipped_sids is not None and data.shipped_sids["5"] == ["<a_5>", "<b_0>"]
    assert data.stats == {
        "users": 20,
        "items": 6,
        "train_samples": 19,
        "validation_samples": 1,
        "test_samples": 1,
    }


@pytest.mark.parametrize(
    ("row", "field", "problem"),
    [
        (csv_row("U", '"[0, 9]"', "1"), "history_item_id", "'9' is not in the catalog"),
        (csv_row("U", '"[0]"', "9"), "item_id", "'9' is not in the catalog"),
        (csv_row("U", '"[]"', "1"), "history_item_id", "empty history"),
        (csv_row("U", "\"[0, __import__('os')]\"", "1"), "history_item_id", "not a Python list literal"),
        ('U,t,t,"[0]",1,s\n', "item_sid", "missing"),
    ],
)
def test_minionerec_bad_rows(tmp_path: Path, row: str, field: str, problem: str) -> None:
    directory = write_minionerec(tmp_path, [csv_row("U", '"[0]"', "1")], [csv_row("U", '"[0]"', "1"), row])
    with pytest.raises(DataFormatError, match=where(directory / "test" / "Toy.csv", 3, field, problem)):
        load_dataset_spec(f"minionerec:{directory}")


def test_minionerec_duplicate_item_id_names_both_lines(tmp_path: Path) -> None:
    directory = write_minionerec(tmp_path, [csv_row("U", '"[0]"', "1")], [csv_row("U", '"[0]"', "1")])
    item_json = write(directory / "index" / "Toy.item.json", '{\n"0": {"title": "a"},\n"1": {},\n"0": {}\n}')
    with pytest.raises(DataFormatError, match=where(item_json, 4, "0", "first on line 2")):
        load_dataset_spec(f"minionerec:{directory}")


# ---------------------------------------------------------------------------------------------
# LETTER json and P5


def write_letter(directory: Path, inter: str) -> Path:
    sids = {str(i): ["<a_0>", "<b_0>", "<c_0>", f"<d_{i}>"] for i in range(4)}
    write(directory / "Toy.index.json", json.dumps(sids))
    write(directory / "Toy.inter.json", inter)
    return directory


def test_letter_synthetic(tmp_path: Path) -> None:
    directory = write_letter(tmp_path, json.dumps({"7": [0, 1, 2, 3], "8": [3]}, indent=4))
    data = load_dataset_spec(f"letter:{directory}", max_history=2)
    assert data.name == "Toy"
    assert data.catalog == {str(i): {} for i in range(4)}
    assert data.sequences == {"7": ["0", "1", "2", "3"], "8": ["3"]}
    assert data.splits["train"] == [Window("7", ("0",), "1")]
    assert data.splits["test"] == [Window("7", ("1", "2"), "3")]
    assert data.stats["users_too_short"] == 1
    assert data.shipped_sids is not None and data.shipped_sids["3"][-1] == "<d_3>"


@pytest.mark.parametrize(
    ("inter", "line", "field", "problem"),
    [
        ('{\n  "7": [0, 1],\n  "8": [2, 99]\n}', 3, "8", "'99' is not in"),
        ('{\n  "7": [0, 1],\n  "8": []\n}', 3, "8", "non-empty list"),
        ('{\n  "7": [0, 1],\n  "8": [2,\n  "9": [1]\n}', 4, "8", "invalid JSON"),
        ('{\n  "7": [0, 1],\n  "8": [2],\n  "7": [3]\n}', 4, "7", "duplicate key, first on line 2"),
    ],
)
def test_letter_bad_input(tmp_path: Path, inter: str, line: int, field: str, problem: str) -> None:
    directory = write_letter(tmp_path, inter)
    with pytest.raises(DataFormatError, match=where(directory / "Toy.inter.json", line, field, problem)):
        load_dataset_spec(f"letter:{directory}")


def test_letter_duplicate_key_inside_an_entry(tmp_path: Path) -> None:
    write_letter(tmp_path, '{"7": [0, 1]}')
    write(tmp_path / "Toy.index.json", '{\n"0": ["<a_0>"],\n"1": {"x": 1, "x": 2}\n}')
    expected = where(tmp_path / "Toy.index.json", 3, "1", "duplicate key 'x' inside its value")
    with pytest.raises(DataFormatError, match=expected):
        load_dataset_spec(f"letter:{tmp_path}")


def test_p5_directory_and_file(tmp_path: Path) -> None:
    file = write(tmp_path / "toy_p5" / "user_sequence.txt", "A i1 i2 i3\n\nB i3 i4\nC i5\n")
    for spec in (f"p5:{file.parent}", f"p5:{file}"):
        data = load_dataset_spec(spec)
        assert data.name == "toy_p5"
        assert list(data.catalog) == ["i1", "i2", "i3", "i4", "i5"]
        assert data.splits["validation"] == [Window("A", ("i1",), "i2")]
        assert data.splits["test"] == [Window("A", ("i1", "i2"), "i3"), Window("B", ("i3",), "i4")]
        assert (data.stats["users"], data.stats["interactions"], data.stats["users_too_short"]) == (3, 6, 1)


@pytest.mark.parametrize(
    ("text", "line", "field", "problem"),
    [("A i1 i2\nB\n", 2, "items", "no items"), ("A i1\nB i2\nA i3\n", 3, "user", "first on line 1")],
)
def test_p5_bad_lines(tmp_path: Path, text: str, line: int, field: str, problem: str) -> None:
    file = write(tmp_path / "user_sequence.txt", text)
    with pytest.raises(DataFormatError, match=where(file, line, field, problem)):
        load_dataset_spec(f"p5:{tmp_path}")


# ---------------------------------------------------------------------------------------------
# Raw Amazon reviews

REVIEWS = [  # (reviewer, asin, time), deliberately not in time order for u1
    ("u1", "B", 2),
    ("u1", "A", 1),
    ("u1", "C", 3),
    ("u2", "A", 1),
    ("u2", "B", 2),
    ("u3", "A", 5),
    ("u3", "D", 6),
    ("u4", "X", 1),
    ("u4", "A", 2),
]
METADATA = "\n".join(
    [
        "{'asin': 'A', 'title': 'Alpha', 'categories': [['Beauty', 'Skin'], ['Beauty', 'Face']], "
        "'description': ['one', 'two'], 'price': 3.5}",
        json.dumps({"asin": "B", "title": "Beta", "brand": "Bb", "category": ["Tools"], "description": "x"}),
        json.dumps({"asin": "C", "title": "Gamma"}),
        json.dumps({"asin": "D", "title": ""}),
    ]
)


def review_lines(reviews: list[tuple[str, str, int]]) -> str:
    return "".join(
        json.dumps({"reviewerID": u, "asin": a, "unixReviewTime": t, "reviewText": 'ok, "fine"'}) + "\n"
        for u, a, t in reviews
    )


@pytest.mark.parametrize(
    ("review_name", "meta_name"),
    [("reviews_Beauty_5.json.gz", "meta_Beauty.json"), ("Beauty.jsonl", "meta_Beauty.jsonl.gz")],
)
def test_amazon_kcore_with_metadata(tmp_path: Path, review_name: str, meta_name: str) -> None:
    write(tmp_path / review_name, review_lines(REVIEWS))
    write(tmp_path / meta_name, METADATA + "\n")
    data = load_dataset_spec(f"amazon:{tmp_path}?k_core=2")
    # X has no metadata (1 review dropped). 2-core: C, D (one review each) and u4 go in the first
    # pass, which leaves u3 with one review; the second pass drops it.
    assert data.name == "Beauty"
    assert data.sequences == {"u1": ["A", "B"], "u2": ["A", "B"]}
    assert data.catalog == {
        "A": {"title": "Alpha", "categories": "Beauty, Skin, Face", "description": "one two"},
        "B": {"title": "Beta", "brand": "Bb", "categories": "Tools", "description": "x"},
    }
    assert data.stats == {
        "k_core": 2,
        "dropped_no_metadata_interactions": 1,
        "kcore_dropped_interactions": 4,
        "kcore_dropped_users": 2,
        "kcore_dropped_items": 2,
        "users": 2,
        "items": 2,
        "interactions": 4,
        "users_too_short": 0,
        "train_samples": 0,
        "validation_samples": 0,
        "test_samples": 2,
    }


def test_amazon_without_metadata_keeps_items_without_text(tmp_path: Path) -> None:
    write(tmp_path / "reviews_Toy_5.json", review_lines(REVIEWS))
    data = load_dataset_spec(f"amazon:{tmp_path}?k_core=1")
    assert data.name == "Toy"
    assert list(data.catalog) == ["A", "B", "C", "D", "X"] and all(v == {} for v in data.catalog.values())
    assert data.sequences is not None and data.sequences["u1"] == ["A", "B", "C"]
    assert data.stats["kcore_dropped_interactions"] == data.stats["dropped_no_metadata_interactions"] == 0


def test_amazon_default_kcore_is_five(tmp_path: Path) -> None:
    write(tmp_path / "reviews_Toy_5.json", review_lines(REVIEWS))
    data = load_dataset_spec(f"amazon:{tmp_path}")
    assert data.stats["k_core"] == 5 and data.stats["kcore_dropped_interactions"] == len(REVIEWS)
    assert data.stats["users"] == 0 and all(not data.splits[s] for s in SPLITS)


@pytest.mark.parametrize(
    ("line_text", "field", "problem"),
    [
        ('{"reviewerID": "u9", "asin": "A", "unixReviewTime": }', "(whole line)", "neither JSON"),
        ('{"reviewerID": "u9", "asin": "A"}', "unixReviewTime", "not a finite number"),
        ('{"reviewerID": "u9", "asin": "A", "unixReviewTime": "noon"}', "unixReviewTime", "not a finite"),
        ('{"reviewerID": "u9", "unixReviewTime": 1}', "asin", "missing"),
        ('{"reviewerID": "u9", "asin": "A", "asin": "B", "unixReviewTime": 1}', "asin", "duplicate key"),
    ],
)
def test_amazon_bad_review_lines(tmp_path: Path, line_text: str, field: str, problem: str) -> None:
    reviews = write(tmp_path / "reviews_Toy.json.gz", review_lines(REVIEWS[:2]) + line_text + "\n")
    with pytest.raises(DataFormatError, match=where(reviews, 3, field, problem)):
        load_dataset_spec(f"amazon:{tmp_path}")


def test_amazon_duplicate_metadata_names_both_lines(tmp_path: Path) -> None:
    write(tmp_path / "reviews_Toy.json", review_lines(REVIEWS))
    meta = write(tmp_path / "meta_Toy.json", METADATA + "\n" + json.dumps({"asin": "B"}) + "\n")
    with pytest.raises(DataFormatError, match=where(meta, 5, "asin", "first on line 2")):
        load_dataset_spec(f"amazon:{tmp_path}")


# ---------------------------------------------------------------------------------------------
# Specs


@pytest.mark.parametrize("spec", ["movielens:/tmp", "recbole", "nonsense"])
def test_unknown_kind_lists_valid_kinds(spec: str) -> None:
    expected = "valid specs: ml-100k, recbole:DIR, minionerec:DIR, letter:DIR, p5:DIR_or_FILE, amazon:DIR"
    with pytest.raises(DataFormatError, match=re.escape(expected)):
        load_dataset_spec(spec)


@pytest.mark.parametrize("kind", ["recbole", "minionerec", "letter", "p5", "amazon"])
def test_missing_path_lists_valid_kinds(tmp_path: Path, kind: str) -> None:
    with pytest.raises(DataFormatError, match="does not exist.*valid specs: .*amazon:DIR"):
        load_dataset_spec(f"{kind}:{tmp_path / 'absent'}")


def test_bad_amazon_option(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match="k_core=N"):
        load_dataset_spec(f"amazon:{tmp_path}?k_core=0")
