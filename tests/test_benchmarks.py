"""Benchmark harnesses at CPU size: they must keep running and write sane JSON (their numbers
are not checked here; benchmarks/ says what they measure)."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # each harness runs in a subprocess

REPO = os.path.join(os.path.dirname(__file__), os.pardir)


def test_gpu_smoke_runs_every_stage_on_a_tiny_backbone(smol_path, tmp_path):
    """benchmarks/gpu_smoke.py under `accelerate launch` (single process, CPU): three stages, each
    with its timed steps and a peak memory."""
    output = tmp_path / "smoke.json"
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        os.path.join(REPO, "accelerate_configs", "single_process.yaml"),
        "--num_processes",
        "1",
        os.path.join(REPO, "benchmarks", "gpu_smoke.py"),
        "--shape",
        "tiny",
        "--batch_size",
        "8",
        "--num_generations",
        "4",
        "--timed_steps",
        "2",
        "--output_json",
        str(output),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "2", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    report = json.loads(output.read_text())
    assert list(report["stages"]) == ["stage1_sft", "stage2_latent_sft", "stage3_grpo"]
    for stage, result in report["stages"].items():
        assert len(result["step_seconds"]) == 2, stage
        assert all(math.isfinite(s) and s > 0 for s in result["step_seconds"]), stage
        assert 0 < result["peak_memory_gib"] < 64, stage
    assert report["launch"]["num_processes"] == 1 and "stage3_grpo" in done.stdout


def test_stage1_throughput_times_both_loops_on_the_same_rows(tiny_recbole_dir, tmp_path):
    """benchmarks/stage1_throughput.py: the plain loop and the library's Stage 1 over the same rows."""
    output = tmp_path / "throughput.json"
    command = [
        sys.executable,
        os.path.join(REPO, "benchmarks", "stage1_throughput.py"),
        "--dataset",
        f"recbole:{tiny_recbole_dir}",
        "--max_history",
        "4",
        "--batch_size",
        "8",
        "--output_json",
        str(output),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    report = json.loads(output.read_text())
    assert report["rows"] > 12 and report["tokens"] > 0 and report["model"] == "scratch:tiny"
    assert report["plain_loop_seconds"] > 0 and report["library_seconds"] > 0
    assert math.isclose(report["library_over_plain"], report["library_seconds"] / report["plain_loop_seconds"])


QUALITY_VARIANTS = [
    "Stage 1 (N=0)",
    "LASAR without RL (Stage 2)",
    "LASAR (Stage 2 + GRPO)",
    "Stage 1 + GRPO, N=0",
    "fixed depth N=4",
    "explicit CoT",
    "most-popular",
]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run_benchmark(script: str, *flags: str) -> str:
    env = {
        **os.environ,
        "TOKENIZERS_PARALLELISM": "false",
        "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
    }
    done = subprocess.run(
        [sys.executable, os.path.join(REPO, "benchmarks", script), *flags],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return done.stdout


def test_quality_latency_and_report_at_smoke_budget(smol_path, tiny_recbole_dir, tmp_path):
    """quality.py and latency.py at --budget smoke on a tiny model, then report.py: the JSON has every
    variant and configuration, invariants a wrong harness breaks hold, and every plot is a PNG."""
    import matplotlib.image
    from testing_utils import tiny_job_configs
    from transformers import AutoTokenizer

    dataset = f"recbole:{tiny_recbole_dir}"
    configs = tiny_job_configs(tmp_path, AutoTokenizer.from_pretrained(smol_path), dataset)
    quality_json, latency_json = tmp_path / "quality.json", tmp_path / "latency.json"
    quality_flags = [
        "--budget",
        "smoke",
        "--datasets",
        dataset,
        "--variants_dir",
        str(tmp_path / "q"),
        f"--main_job_flags=--stage1_config {configs['stage1_config']} --logging_steps 1",
        "--output_json",
        str(quality_json),
    ]
    run_benchmark("quality.py", *quality_flags)
    quality = json.loads(quality_json.read_text())
    assert "already in" in run_benchmark("quality.py", *quality_flags)  # a rerun keeps what was measured
    assert json.loads(quality_json.read_text()) == quality
    assert quality["budget"] == "smoke" and quality["seeds"] == [42] and quality["complete"]
    result = quality["datasets"][dataset]
    assert result["seeds"] == [42]
    assert list(result["variants"]) == QUALITY_VARIANTS and result["evaluation"]["exclude_history"] is True
    samples = {name: variant["per_seed"]["42"]["num_samples"] for name, variant in result["variants"].items()}
    assert set(samples.values()) == {12}, samples  # the same users for every variant
    for name, variant in result["variants"].items():
        metrics = variant["per_seed"]["42"]
        assert 0 <= metrics["hr@5"] <= metrics["hr@10"] <= metrics["hr@20"] <= 1, name
        for k in (5, 10, 20):
            assert 0 <= metrics[f"ndcg@{k}"] <= metrics[f"hr@{k}"], name
    means = {name: variant["mean"] for name, variant in result["variants"].items()}
    assert means["Stage 1 (N=0)"]["mean_depth"] == means["Stage 1 + GRPO, N=0"]["mean_depth"] == 0
    assert means["fixed depth N=4"]["mean_depth"] == 4 and means["explicit CoT"]["mean_rationale_tokens"] >= 1
    assert all(means[name]["train_minutes"] > 0 for name in QUALITY_VARIANTS[1:-1])

    run_dir = result["run_dirs"]["42"]
    run_benchmark(
        "latency.py",
        "--budget",
        "smoke",
        "--run_dir",
        run_dir,
        "--dataset",
        dataset,
        "--beams",
        "10",
        "20",
        "--max_rationale_tokens",
        "16",
        "--output_json",
        str(latency_json),
    )
    latency = json.loads(latency_json.read_text())
    shapes = [(c["batch_size"], c["num_beams"]) for c in latency["configurations"]]
    assert shapes == [(1, 10), (1, 20), (8, 10), (8, 20)]
    assert latency["headline"] == {"batch_size": 1, "num_beams": 20}
    numbers = [latency["explicit_cot_over_lasar"]]
    for config in latency["configurations"]:
        assert list(config["variants"]) == ["no reasoning (N=0)", "fixed N=4", "LASAR", "explicit CoT"]
        assert {v["requests"] for v in config["variants"].values()} == {8}
        assert config["variants"]["fixed N=4"]["mean_depth"] == 4
        numbers += [v["ms_per_request"] for v in config["variants"].values()]
        ratios = config["ratios"]
        measured = ("lasar_over_no_reasoning", "fixed4_over_no_reasoning", "explicit_cot_over_lasar")
        numbers += [ratios[k] for k in measured]
        # Timing noise on a tiny model can make the rationale look free: then nothing is predicted.
        assert math.isfinite(ratios["rationale_token_ms"])
        assert (ratios["predicted_explicit_cot_over_lasar"] is None) == (ratios["rationale_token_ms"] <= 0)
        assert (ratios["fidelity"] is None) == (ratios["predicted_explicit_cot_over_lasar"] is None)
    assert all(math.isfinite(n) and n > 0 for n in numbers), numbers

    report = tmp_path / "docs" / "results.md"
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- main-job-results:start -->\nold\n<!-- main-job-results:end -->\nmore\n")
    main_job_json = os.path.join(REPO, "benchmarks", "results", "main_job_ml100k.json")  # the committed run's summary
    run_benchmark(
        "report.py",
        *("--quality_json", str(quality_json), "--latency_json", str(latency_json), "--output", str(report)),
        *("--main_job_json", main_job_json, "--readme", str(readme)),
    )
    headline = readme.read_text()
    assert headline.startswith("intro\n") and headline.endswith("more\n") and "old" not in headline
    assert "| Stage 1 (N=0) |" in headline and json.loads(Path(main_job_json).read_text())["command"] in headline
    text = report.read_text()
    for heading in ("## Quality", "## Depth before and after RL", "## Latency", "## Training curves"):
        assert heading in text, heading
    assert result["measured_by"]["42"]["command"] in text and latency["command"] in text
    plots = sorted((tmp_path / "docs" / "results").glob("*.png"))
    assert [p.name for p in plots] == ["depth_histograms.png", "latency.png", "training_curves.png"]
    for plot in plots:
        assert plot.read_bytes()[:8] == PNG_SIGNATURE and matplotlib.image.imread(plot).size > 0, plot
    assert "GRPO reward: 2 logged step(s)" in text  # the curves come from the Trainer's own logs
