"""Two CPU processes (torchrun, gloo) against one: the latent loop, the Policy Head and the
GRPO rollouts under DDP and DeepSpeed ZeRO-2/3 (DS_ACCELERATOR=cpu). Each scenario is
tests/distributed_worker.py; a hang fails on the timeout."""

import json
import math
import os
import subprocess
import sys

import pytest
from testing_utils import free_port

from lasar_trl.modeling.checkpoint import load_recommender

pytestmark = pytest.mark.slow  # torchrun / accelerate launch workers

WORKER = os.path.join(os.path.dirname(__file__), "distributed_worker.py")
RECIPES = os.path.join(os.path.dirname(__file__), os.pardir, "recipes")


BACKENDS = {"ddp": 0, "zero2": 2, "zero3": 3}  # the worker's ZeRO stage argument (0: plain DDP)
SINGLE_PROCESS: dict[str, dict] = {}


def run(scenario: str, out_dir, processes: int, smol_path: str, backend: str = "ddp") -> list[dict]:
    out_dir.mkdir()
    launcher = (
        [sys.executable]
        if processes == 1
        else [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            str(processes),
            "--master_port",
            str(free_port()),
        ]
    )
    env = {**os.environ, "PYTHONPATH": os.path.dirname(__file__), "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu"}
    command = [*launcher, WORKER, scenario, str(out_dir), str(BACKENDS[backend])]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    return [json.loads((out_dir / f"rank{rank}.json").read_text()) for rank in range(processes)]


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("scenario", ["stage2_fixed", "stage2_vocab", "grpo_greedy"])
def test_two_processes_take_the_same_first_step_as_one(scenario, backend, smol_path, tmp_path):
    """Stage 2 at a fixed depth (also with vocab-space alignment, which reads the LM head: sharded
    under ZeRO-3), GRPO at argmax depth with greedy rollouts: the same global batch of 8 on one
    process or split over two gives the same loss and gradient norm."""
    if scenario not in SINGLE_PROCESS:  # the same for every backend: run it once
        SINGLE_PROCESS[scenario] = run(scenario, tmp_path / "one", 1, smol_path)[0]["logs"][0]
    single = SINGLE_PROCESS[scenario]
    for rank in run(scenario, tmp_path / "two", 2, smol_path, backend):
        step = rank["logs"][0]
        assert step["loss"] == pytest.approx(single["loss"], rel=1e-4)
        assert step["grad_norm"] == pytest.approx(single["grad_norm"], rel=1e-4)
        assert single["grad_norm"] > 0


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("scenario", ["stage2_cot", "grpo_sample"])
def test_ranks_at_different_depths_in_one_step_finish_together(scenario, backend, smol_path, tmp_path):
    """Rows of different depths land on different ranks (Stage 2: CoT segment counts; GRPO:
    sampled depths): every rank pads to the largest, so three steps finish, with one loss."""
    ranks = run(scenario, tmp_path / "two", 2, smol_path, backend)
    first, second = (rank["local_depth_maxima"] for rank in ranks)
    assert any(a != b for a, b in zip(first, second))  # the ranks did need different depths
    losses = [[step["loss"] for step in rank["logs"]] for rank in ranks]
    assert len(losses[0]) == 3 and losses[0] == losses[1] and all(math.isfinite(v) for v in losses[0])


def test_zero3_run_saves_a_consolidated_checkpoint_that_evaluate_reads(smol_path, tiny_recbole_dir, tmp_path):
    """The final save of a ZeRO-3 run gathers the shards into an ordinary folder (HF weights,
    LASAR parts, SID map) holding the same model as the one-process run; evaluate.py reads it."""
    run("stage2_fixed", tmp_path / "one", 1, smol_path)
    run("stage2_fixed", tmp_path / "zero3", 2, smol_path, "zero3")
    single, _, _ = load_recommender(str(tmp_path / "one" / "final"))
    sharded, _, _ = load_recommender(str(tmp_path / "zero3" / "final"))
    expected = single.state_dict()
    assert sharded.state_dict().keys() == expected.keys()
    for name, value in sharded.state_dict().items():
        # Adam's first step is ~lr * sign(g): the few entries whose gradient is ~0 may flip sign
        difference = (value - expected[name]).abs()
        assert difference.mean() < 1e-6 and difference.max() < 1e-2, name
    evaluate = os.path.join(os.path.dirname(__file__), os.pardir, "recipes", "evaluate.py")
    report = tmp_path / "eval.json"
    subprocess.run(
        [
            sys.executable,
            evaluate,
            "--checkpoint",
            str(tmp_path / "zero3" / "final"),
            "--dataset",
            f"recbole:{tiny_recbole_dir}",
            "--num_beams",
            "5",
            "--output_json",
            str(report),
        ],
        check=True,
        timeout=300,
    )
    assert json.loads(report.read_text())["invalid_rate"] == 0.0


def test_main_job_runs_every_stage_under_accelerate_launch_with_zero3(smol_path, tiny_recbole_dir, tmp_path):
    """The user's command with the shipped ZeRO-3 config, two CPU processes and a tiny model: Stage 1
    (model loaded into zero.Init shards), Stage 2 (anchors need whole weights), Stage 3 (built after
    the other stages' Trainers) and the table, which loads each consolidated folder on one process."""
    from testing_utils import tiny_job_configs
    from transformers import AutoTokenizer

    dataset = f"recbole:{tiny_recbole_dir}"
    configs = tiny_job_configs(
        tmp_path,
        AutoTokenizer.from_pretrained(smol_path),
        dataset,
        ddp_backend="gloo",
        save_strategy="no",
        max_steps=2,
        per_device_train_batch_size=4,
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.path.dirname(__file__),
        "OMP_NUM_THREADS": "1",
        "DS_ACCELERATOR": "cpu",
        "TOKENIZERS_PARALLELISM": "false",
    }
    run_dir = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        os.path.join(RECIPES, os.pardir, "accelerate_configs", "deepspeed_zero3.yaml"),
        "--num_processes",
        "2",
        "--mixed_precision",
        "no",
        "--main_process_port",
        str(free_port()),
        os.path.join(RECIPES, "grpo_lasar.py"),
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
        "--ddp_backend",
        "gloo",
        "--per_device_train_batch_size",
        "4",
        "--num_generations",
        "4",
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert list(summary["results"]) == [
        "LASAR (Stage 3, Policy Head depth)",
        "LASAR forced to N=4 (ablation)",
        "Stage 1 (N=0)",
        "most-popular",
    ]
    assert all(result["num_samples"] == 12 for result in summary["results"].values())  # every test user
    for stage in ("stage1", "stage2", "stage3"):
        assert (run_dir / stage / "stage_complete.json").is_file(), stage
    model, _, _ = load_recommender(str(run_dir / "stage3"))  # consolidated: whole tensors
    assert all(p.numel() > 0 for p in model.parameters())
