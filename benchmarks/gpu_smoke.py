"""A few training steps of each stage on a randomly initialised backbone: step time and peak memory.

For a GPU machine with nothing to download: the backbone is built from a config (the shape
of SmolLM2-135M or Qwen3-0.6B, or a tiny one for a CPU check) with random weights, and the
data are synthetic (random histories over random 3-level SIDs, random CoT anchors of 1-6
segments); their values do not change the cost of a step. Stage 1 SFT, Stage 2 latent SFT
and Stage 3 GRPO run one after the other in this process, each from the previous one's saved
checkpoint, under whatever `accelerate launch` config started it.

  step time     median wall time of a step after `warmup_steps` (CUDA synchronised)
  peak memory   CUDA: torch.cuda.max_memory_allocated during the timed steps;
                CPU: peak resident set size (sampled every 5 ms)

    bash benchmarks/gpu_smoke.sh                          # single process and ZeRO-2, bf16
    accelerate launch --config_file accelerate_configs/single_process.yaml benchmarks/gpu_smoke.py --shape tiny
"""

from __future__ import annotations

import os
import statistics
import tempfile
from dataclasses import asdict, dataclass, field

import torch
from common import StepTimer, command_line, machine_info
from transformers import AutoModelForCausalLM, AutoTokenizer, HfArgumentParser, LlamaConfig, Qwen3Config
from trl import SFTConfig

from lasar_trl.atomic import write_json_atomic
from lasar_trl.data.schema import Window
from lasar_trl.modeling.checkpoint import load_recommender
from lasar_trl.modeling.loading import EMBEDDED_MODEL, resolve_model_path
from lasar_trl.rewards import ExactMatchReward, PrefixMatchReward, RankingReward
from lasar_trl.sid import SidMap
from lasar_trl.sid.tokenizer import add_sid_tokens
from lasar_trl.tasks import recommendation_dataset
from lasar_trl.trainers import LasarGRPOConfig, LasarGRPOTrainer, LasarSFTConfig, LasarSFTTrainer, SidSFTTrainer

# The published architectures' sizes (vocabulary: the tokenizer's).
SHAPES = {
    "smollm2-135m": (
        LlamaConfig,
        dict(
            hidden_size=576,
            intermediate_size=1536,
            num_hidden_layers=30,
            num_attention_heads=9,
            num_key_value_heads=3,
            max_position_embeddings=8192,
            rope_theta=100000.0,
            rms_norm_eps=1e-5,
            tie_word_embeddings=True,
        ),
    ),
    "qwen3-0.6b": (
        Qwen3Config,
        dict(
            hidden_size=1024,
            intermediate_size=3072,
            num_hidden_layers=28,
            num_attention_heads=16,
            num_key_value_heads=8,
            head_dim=128,
            max_position_embeddings=40960,
            rope_theta=1000000.0,
            rms_norm_eps=1e-6,
            tie_word_embeddings=True,
        ),
    ),
    "tiny": (
        LlamaConfig,
        dict(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=512,
            tie_word_embeddings=True,
        ),
    ),
}
ITEMS, CODEBOOK, HISTORY, MAX_SEGMENTS = 2000, 256, 10, 6


@dataclass
class SmokeArguments:
    shape: str = field(default="smollm2-135m", metadata={"help": "Backbone shape.", "choices": list(SHAPES)})
    tokenizer: str = field(
        default=EMBEDDED_MODEL, metadata={"help": "A folder (or hub id) with tokenizer files; the embedded default."}
    )
    batch_size: int = field(default=16, metadata={"help": "Rows per SFT step; rollouts per GRPO step."})
    num_generations: int = field(default=8, metadata={"help": "GRPO group size."})
    warmup_steps: int = field(default=1, metadata={"help": "Untimed steps first, per stage."})
    timed_steps: int = field(default=3, metadata={"help": "Timed steps per stage."})
    output_json: str = field(default="outputs/gpu_smoke/gpu_smoke.json", metadata={"help": "Output file."})


def parse_args(argv: list[str] | None = None) -> SmokeArguments:
    """The command line (`argv`, else sys.argv) as SmokeArguments; tests parse the documented commands with it."""
    return HfArgumentParser(SmokeArguments).parse_args_into_dataclasses(argv)[0]


def synthetic_data(samples: int, hidden_size: int) -> tuple[SidMap, list[Window], list[list[list[float]]]]:
    """A 3-level SID map over ITEMS items, `samples` windows of HISTORY items, anchors of 1-6 segments."""
    generator = torch.Generator().manual_seed(0)
    items = [str(i) for i in range(ITEMS)]
    sid_map = SidMap.from_codes(items, torch.randint(0, CODEBOOK, (ITEMS, 3), generator=generator))
    picks = torch.randint(0, ITEMS, (samples, HISTORY + 1), generator=generator).tolist()
    windows = [Window(f"u{row}", tuple(items[i] for i in pick[:-1]), items[pick[-1]]) for row, pick in enumerate(picks)]
    segments = torch.randint(1, MAX_SEGMENTS + 1, (samples,), generator=generator).tolist()
    anchors = [torch.randn(count, hidden_size, generator=generator).tolist() for count in segments]
    return sid_map, windows, anchors


def common_args(args: SmokeArguments, output_dir: str) -> dict:
    cuda = torch.cuda.is_available()
    return dict(
        output_dir=output_dir,
        max_steps=args.warmup_steps + args.timed_steps,
        learning_rate=1e-5,
        per_device_train_batch_size=args.batch_size,
        bf16=cuda,
        use_cpu=not cuda,
        report_to="none",
        save_strategy="no",
        logging_strategy="no",
        seed=0,
        dataloader_num_workers=0,
        disable_tqdm=True,
        activation_checkpointing=False,
    )


def measured(trainer, timer: StepTimer) -> dict:
    trainer.train()
    trainer.save_model(trainer.args.output_dir)
    return {
        "median_step_seconds": statistics.median(timer.seconds),
        "step_seconds": timer.seconds,
        "peak_memory_gib": timer.peak_memory() / 2**30,
    }


def main(args: SmokeArguments) -> dict:
    cuda = torch.cuda.is_available()
    config_class, sizes = SHAPES[args.shape]
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(args.tokenizer))
    rows = args.batch_size * (args.warmup_steps + args.timed_steps)
    sid_map, windows, anchors = synthetic_data(rows, sizes["hidden_size"])
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(
        config_class(
            vocab_size=len(tokenizer),
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            bos_token_id=tokenizer.bos_token_id,
            **sizes,
        )
    )
    add_sid_tokens(model, tokenizer, sid_map)
    parameters = sum(p.numel() for p in model.parameters())
    rows_dataset = recommendation_dataset(windows, sid_map)
    run_dir = tempfile.mkdtemp(prefix="gpu_smoke-")
    stages = {}

    timer = StepTimer(args.warmup_steps, cuda)
    stage1 = SidSFTTrainer(
        model=model,
        args=SFTConfig(**common_args(args, os.path.join(run_dir, "stage1"))),
        train_dataset=rows_dataset.select_columns(["prompt", "completion"]),
        processing_class=tokenizer,
        sid_map=sid_map,
        callbacks=[timer],
    )
    stages["stage1_sft"] = measured(stage1, timer)
    del stage1, model

    model, tokenizer, sid_map = load_recommender(os.path.join(run_dir, "stage1"))
    timer = StepTimer(args.warmup_steps, cuda)
    stage2 = LasarSFTTrainer(
        model=model,
        args=LasarSFTConfig(**common_args(args, os.path.join(run_dir, "stage2")), align_space="vocab"),
        train_dataset=rows_dataset.select_columns(["prompt", "completion"]).add_column("anchors", anchors),
        processing_class=tokenizer,
        sid_map=sid_map,
        callbacks=[timer],
    )
    stages["stage2_latent_sft"] = measured(stage2, timer)
    del stage2, model

    model, tokenizer, sid_map = load_recommender(os.path.join(run_dir, "stage2"))
    timer = StepTimer(args.warmup_steps, cuda)
    group = args.num_generations
    stage3 = LasarGRPOTrainer(
        model=model,
        reward_funcs=[
            RankingReward(sid_map, tokenizer, group),
            ExactMatchReward(sid_map, tokenizer),
            PrefixMatchReward(sid_map, tokenizer),
        ],
        args=LasarGRPOConfig(
            **common_args(args, os.path.join(run_dir, "stage3")), num_generations=group, temperature=1.0
        ),
        train_dataset=rows_dataset.select_columns(["prompt", "target"]).add_column("anchors", anchors),
        processing_class=tokenizer,
        sid_map=sid_map,
        callbacks=[timer],
    )
    stages["stage3_grpo"] = measured(stage3, timer)
    distributed = stage3.accelerator.state
    return {
        "command": command_line(),
        "launch": {
            "distributed_type": str(distributed.distributed_type),
            "num_processes": distributed.num_processes,
            "zero_stage": getattr(distributed.deepspeed_plugin, "zero_stage", None),
        },
        "machine": machine_info("cuda" if cuda else "cpu", "float32 weights" + (", bf16 autocast" if cuda else "")),
        "arguments": asdict(args),
        "parameters": parameters,
        "memory": "CUDA max_memory_allocated" if cuda else "peak RSS during timed steps",
        "stages": stages,
    }


if __name__ == "__main__":
    arguments = parse_args()
    report = main(arguments)
    if int(os.environ.get("RANK", "0")) == 0:
        launch = report["launch"]
        print(
            f"\n{arguments.shape} ({report['parameters'] / 1e6:.0f}M parameters), {launch['distributed_type']}"
            f" (ZeRO {launch['zero_stage']}), {report['machine']['device_name']}"
        )
        for stage, result in report["stages"].items():
            seconds, memory = result["median_step_seconds"], result["peak_memory_gib"]
            print(f"  {stage:<20} {seconds:8.3f} s/step   {memory:7.2f} GiB peak")
        write_json_atomic(arguments.output_json, report)
