"""The main job (`accelerate launch recipes/grpo_lasar.py`): end to end on its default compact
backbone and the embedded ml-100k, shrunk by `--smoke true`, then again, reusing every stage, then
GRPO with LoRA from its Stage-2 folder; the same job on the real SmolLM2-135M (its yaml); and on a
tiny model, its trackers in every stage and GRPO from a Stage-1 checkpoint (the MiniOneRec recipe)."""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # whole jobs under `accelerate launch`

RECIPE = os.path.join(os.path.dirname(__file__), os.pardir, "recipes", "grpo_lasar.py")


def run_main_job(run_dir, *flags: str) -> str:
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--num_processes",
        "1",
        RECIPE,
        "--smoke",
        "true",
        "--run_dir",
        str(run_dir),
        "--output_dir",
        str(run_dir / "stage3"),
        *flags,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return done.stdout


def test_main_job_runs_all_stages_then_reuses_them(tmp_path):
    first = run_main_job(tmp_path)
    stage1_config = json.loads((tmp_path / "stage1" / "config.json").read_text())
    assert stage1_config["prompt_template"] == "compact" and stage1_config["hidden_size"] == 64  # scratch:tiny
    for stage in ("stage1", "stage2", "stage3"):
        assert (tmp_path / stage / "stage_complete.json").is_file(), stage
    assert (tmp_path / "stage2" / "latent_train_data").is_dir()
    summary = json.loads((tmp_path / "summary.json").read_text())
    results = summary["results"]
    assert list(results) == [
        "LASAR (Stage 3, Policy Head depth)",
        "LASAR forced to N=4 (ablation)",
        "Stage 1 (N=0)",
        "most-popular",
    ]
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
    assert (
        again["LASAR (Stage 3, Policy Head depth)"]["ndcg@10"]
        == results["LASAR (Stage 3, Policy Head depth)"]["ndcg@10"]
    )

    # The compact Stage-2 folder is an ordinary checkpoint: GRPO with LoRA from it, then the evaluation
    lora = tmp_path / "lora"
    run_main_job(
        lora,
        "--model_name_or_path",
        str(tmp_path / "stage2"),
        "--stage1_checkpoint",
        str(tmp_path / "stage1"),
        "--use_peft",
        "true",
        "--lora_r",
        "4",
    )
    assert (lora / "stage3" / "adapter_config.json").is_file()
    lora_results = json.loads((lora / "summary.json").read_text())["results"]
    assert lora_results["LASAR (Stage 3, Policy Head depth)"]["invalid_rate"] == 0.0


@pytest.mark.real_model
def test_main_job_on_the_llm_backbone(smol_path, tmp_path):
    out = run_main_job(tmp_path, "--config", os.path.join(os.path.dirname(RECIPE), "grpo_lasar_smollm2.yaml"))
    assert json.loads((tmp_path / "stage1" / "config.json").read_text())["model_type"] == "llama"
    assert json.loads((tmp_path / "stage1" / "config.json").read_text()).get("prompt_template") == "english"
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["results"]["LASAR (Stage 3, Policy Head depth)"]["num_samples"] == 16
    assert "SMOKE TEST: ml-100k test, 16 users" in out


def test_main_job_reports_every_stage_and_runs_grpo_from_stage1(smol_path, tiny_recbole_dir, tmp_path):
    """`--report_to tensorboard` reaches Stages 1 and 2 (they run from their own yamls), and the
    documented Stage-1 + GRPO at depth 0 run evaluates without a Policy Head to ask for depths."""
    from testing_utils import tiny_job_configs
    from transformers import AutoTokenizer

    dataset = f"recbole:{tiny_recbole_dir}"
    configs = tiny_job_configs(tmp_path, AutoTokenizer.from_pretrained(smol_path), dataset)

    def run_tiny_job(run_dir, *flags: str) -> dict:
        command = [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--num_processes",
            "1",
            RECIPE,
            "--smoke",
            "true",
            "--dataset",
            dataset,
            "--stage1_config",
            configs["stage1_config"],
            "--stage2_config",
            configs["stage2_config"],
            "--run_dir",
            str(run_dir),
            "--output_dir",
            str(run_dir / "stage3"),
            "--per_device_train_batch_size",
            "4",
            "--num_generations",
            "4",
            *flags,
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
        return json.loads((run_dir / "summary.json").read_text())

    run_tiny_job(tmp_path / "lasar", "--report_to", "tensorboard")
    for stage in ("stage1", "stage2", "stage3"):
        assert list((tmp_path / "lasar" / stage).rglob("events.out.tfevents.*")), stage

    summary = run_tiny_job(
        tmp_path / "n0",
        "--model_name_or_path",
        str(tmp_path / "lasar" / "stage1"),
        "--rl_rows",
        str(tmp_path / "lasar" / "stage2" / "latent_train_data"),
        "--rollout_depth",
        "fixed",
        "--fixed_depth",
        "0",
        "--terminal_align_weight",
        "0",
    )
    assert list(summary["results"]) == ["Stage 1 + GRPO (N=0)", "most-popular"]
    assert summary["stage2_before_rl"] is None
    assert summary["results"]["Stage 1 + GRPO (N=0)"]["depth_histogram"] == {"0": 12}
