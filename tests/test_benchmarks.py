"""Benchmark harnesses at CPU size: they must keep running and write sane JSON (their numbers
are not checked here; benchmarks/ says what they measure)."""

import json
import math
import os
import subprocess
import sys

REPO = os.path.join(os.path.dirname(__file__), os.pardir)


def test_gpu_smoke_runs_every_stage_on_a_tiny_backbone(smol_path, tmp_path):
    """benchmarks/gpu_smoke.py under `accelerate launch` (single process, CPU): three stages, each
    with its timed steps and a peak memory."""
    output = tmp_path / "smoke.json"
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file",
        os.path.join(REPO, "accelerate_configs", "single_process.yaml"), "--num_processes", "1",
        os.path.join(REPO, "benchmarks", "gpu_smoke.py"), "--shape", "tiny", "--batch_size", "8",
        "--num_generations", "4", "--timed_steps", "2", "--output_json", str(output),
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
