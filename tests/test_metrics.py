import math

import pytest

from lasar_trl.evaluation.metrics import (
    catalog_coverage,
    hit_rate_at_k,
    invalid_rate,
    ndcg_at_k,
    ranking_metrics,
)

RANKED = [["a", "b", "c"], ["c", "a", "b"], ["b", "c", "d"]]
TARGETS = ["a", "b", "z"]  # ranks 1, 3, absent


def test_hit_rate_by_hand():
    assert hit_rate_at_k(RANKED, TARGETS, 1) == pytest.approx(1 / 3)
    assert hit_rate_at_k(RANKED, TARGETS, 2) == pytest.approx(1 / 3)
    assert hit_rate_at_k(RANKED, TARGETS, 3) == pytest.approx(2 / 3)


def test_ndcg_by_hand():
    assert ndcg_at_k(RANKED, TARGETS, 1) == pytest.approx(1 / 3)
    assert ndcg_at_k(RANKED, TARGETS, 3) == pytest.approx((1 + 1 / math.log2(4)) / 3)  # (1 + 0.5) / 3 = 0.5
    assert ndcg_at_k(RANKED, TARGETS, 3) == pytest.approx(0.5)


def test_ranking_metrics_keys_and_order():
    metrics = ranking_metrics(RANKED, TARGETS, ks=(1, 2, 3))
    assert set(metrics) == {"hr@1", "hr@2", "hr@3", "ndcg@1", "ndcg@2", "ndcg@3"}
    assert metrics["hr@1"] <= metrics["hr@2"] <= metrics["hr@3"]
    assert all(metrics[f"ndcg@{k}"] <= metrics[f"hr@{k}"] for k in (1, 2, 3))


def test_invalid_rate_and_coverage():
    assert invalid_rate(["<a_1>", "<a_2>", "<a_9>", "<a_1>"], {"<a_1>", "<a_2>"}) == pytest.approx(0.25)
    assert invalid_rate([], {"<a_1>"}) == 0.0
    assert catalog_coverage(RANKED, num_catalog_items=8, k=2) == pytest.approx(3 / 8)  # a, b, c


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="2 ranked lists for 3 targets"):
        hit_rate_at_k(RANKED[:2], TARGETS, 1)
    with pytest.raises(ValueError, match="no requests"):
        ndcg_at_k([], [], 1)
