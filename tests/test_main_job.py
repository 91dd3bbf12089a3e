"""The main job (`accelerate launch recipes/grpo_lasar.py`) end to end on the real 135M model and
the embedded ml-100k, shrunk by `--smoke true`; then again, reusing every stage."""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.real_model
RECIPE = os.path.join(os.path.dirname(__file__), os.pardir, "recipes", "grpo_lasar.py")


def run_main_job(run_dir) -> str:
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", RECIPE, "--smoke", "true",
               "--run_dir", str(run_dir), "--output_dir", str(run_dir / "stage3")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return done.stdout


def test_main_job_runs_all_stages_then_reuses_them(smol_path, tmp_path):
    first = run_main_job(tmp_path)
    for stage in ("stage1", "stage2", "stage3"):
        assert (tmp_path / stage / "stage_complete.json").is_file(), stage
    assert (tmp_path / "stage2" / "latent_train_data").is_dir()
    summary = json.loads((tmp_path / "summary.json").read_text())
    results = summary["results"]
    assert list(results) == ["LASAR (Stage 3, Policy Head depth)", "LASAR forced to N=4 (ablation)",
                             "Stage 1 (N=0)", "most-popular"]
    assert sum(summary["stage2_before_rl"]["depth_histogram"].values()) == 16
    for label, result in results.items():
        assert result["num_samples"] == 16 and result["exclude_history"], label
        assert 0 <= result["hr@5"] <= result["hr@10"] <= result["hr@20"] <= 1, label
        assert sum(result["depth_histogram"].values()) == 16, label
        if label != "most-popular":
            assert result["invalid_rate"] == 0.0 and result["latency_ms_per_request"] > 0, label
    assert results["LASAR forced to N=4 (ablation)"]["depth_histogram"] == {"4": 16}
    assert results["Stage 1 (N=0)"]["depth_histogram"] == {"0": 16}
    assert all(1 <= int(depth) <= 8 for depth in results["LASAR (Stage 3, Policy Head depth)"]["depth_histogram"])
    assert "SMOKE TEST: ml-100k test, 16 users" in first and "Stage 3: GRPO" in first

    second = run_main_job(tmp_path)
    for stage in ("Stage 1", "Stage 2", "Stage 3"):
        assert f"{stage}" in second and "reusing the completed run" in second
    assert second.count("reusing the completed run") == 3
    again = json.loads((tmp_path / "summary.json").read_text())["results"]
    assert again["LASAR (Stage 3, Policy Head depth)"]["ndcg@10"] == results["LASAR (Stage 3, Policy Head depth)"][
        "ndcg@10"]
