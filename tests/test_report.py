"""benchmarks/report.py's README block: the main job's summary.json as a table, between markers."""

import importlib.util
import json
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location(
    "report", Path(__file__).resolve().parents[1] / "benchmarks" / "report.py"
)
report = importlib.util.module_from_spec(spec)
spec.loader.exec_module(report)

METRICS = {"num_samples": 943, "num_beams": 20, "exclude_history": True}
SUMMARY = {
    "command": "recipes/grpo_lasar.py",
    "dataset": "ml-100k",
    "split": "test",
    "train_minutes": {"stage1": 7.04, "stage2": 2.43},
    "total_minutes": 11.73,
    "machine": {"cpu": "AMD EPYC", "cpu_count": 2, "gpu": None, "torch": "2.13.0+cpu", "date": "2026-12-03"},
    "results": {
        "Stage 1 (N=0)": {
            **METRICS,
            "hr@10": 0.123,
            "ndcg@10": 0.06460,
            "hr@20": 0.1856,
            "ndcg@20": 0.0805,
            "mean_depth": 0,
        },
        "most-popular": {
            **METRICS,
            "hr@10": 0.0859,
            "ndcg@10": 0.0439,
            "hr@20": 0.1262,
            "ndcg@20": 0.054,
            "mean_depth": 0,
        },
    },
    "stage2_before_rl": {"mean_depth": 4.877},
    "grpo_exact_match_per_logged_window": [0.0, 0.00625, 0.015625],
}


def test_main_job_section_states_command_machine_time_and_every_variant():
    lines = report.main_job_section(SUMMARY, "benchmarks/results/main_job_ml100k.json")
    text = "\n".join(lines)
    assert "`recipes/grpo_lasar.py` on AMD EPYC (2 cores, no GPU)" in text and "**11.7 min**" in text
    assert "Stage 1 7.0 min, Stage 2 2.4 min" in text and "943 ml-100k test users, 20 beams" in text
    assert "| Stage 1 (N=0) | .1230 | .0646 | .1856 | .0805 | 0.00 |" in lines
    assert "| most-popular | .0859 | .0439 | .1262 | .0540 | 0.00 |" in lines
    assert "Stage 2's mean depth before RL: 4.88." in lines
    assert "(3 windows): 0.0000 to 0.0156; windows at 0: 1." in text


def test_replace_between_markers_keeps_everything_outside():
    text = "a\n<!-- t:start -->\nold\nold\n<!-- t:end -->\nb\n"
    assert report.replace_between_markers(text, "t", ["x", "y"]) == "a\n<!-- t:start -->\nx\ny\n<!-- t:end -->\nb\n"


@pytest.mark.parametrize(
    "text", ["no markers", "<!-- t:end -->\n<!-- t:start -->", "<!-- t:start --><!-- t:start --><!-- t:end -->"]
)
def test_replace_between_markers_refuses_a_missing_or_broken_pair(text):
    with pytest.raises(ValueError, match="t:start"):
        report.replace_between_markers(text, "t", ["x"])


def test_readme_table_is_what_report_writes_from_the_committed_json():
    """README's headline numbers come only from benchmarks/results/main_job_ml100k.json."""
    root = Path(__file__).resolve().parents[1]
    json_path = "benchmarks/results/main_job_ml100k.json"
    readme = (root / "README.md").read_text()
    summary = json.loads((root / json_path).read_text())
    expected = report.replace_between_markers(readme, "main-job-results", report.main_job_section(summary, json_path))
    assert readme == expected, "README's main-job table differs from the JSON: run python benchmarks/report.py"
