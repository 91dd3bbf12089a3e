"""benchmarks/latency.py's derived ratios, against hand-computed values."""

from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def latency(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # latency.py imports its sibling common.py
    import latency

    return latency


def variants(no_reasoning: float, cot: float) -> dict:
    return {
        "no reasoning (N=0)": {"ms_per_request": no_reasoning},
        "fixed N=4": {"ms_per_request": 12.0},
        "LASAR": {"ms_per_request": 11.0, "mean_depth": 2.0},
        "explicit CoT": {"ms_per_request": cot, "mean_rationale_tokens": 10.0},
    }


def test_ratios_follow_the_token_count_model(latency):
    # t0 = 10, CoT 30 over 10 tokens: c = 2 ms; predicted (10 + 20) / (10 + 4) = 15/7; measured 30/11.
    r = latency.ratios(variants(10.0, 30.0))
    assert r["lasar_over_no_reasoning"] == pytest.approx(1.1)
    assert r["fixed4_over_no_reasoning"] == pytest.approx(1.2)
    assert r["rationale_token_ms"] == pytest.approx(2.0)
    assert r["explicit_cot_over_lasar"] == pytest.approx(30 / 11)
    assert r["predicted_explicit_cot_over_lasar"] == pytest.approx(15 / 7)
    assert r["fidelity"] == pytest.approx((30 / 11) / (15 / 7))


def test_a_rationale_that_costs_nothing_predicts_nothing(latency):
    """Timing noise can make explicit CoT no slower than no reasoning: no negative prediction."""
    r = latency.ratios(variants(10.0, 9.0))
    assert r["rationale_token_ms"] == pytest.approx(-0.1)
    assert r["predicted_explicit_cot_over_lasar"] is None and r["fidelity"] is None
    assert r["explicit_cot_over_lasar"] == pytest.approx(9 / 11)
