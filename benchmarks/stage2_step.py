"""Training cost of Stage 2: step time and peak memory, latent SFT at N = 4 vs Stage-1 SFT.

Both trainers run on the same ml-100k recommendation rows with the same model, batch,
precision and activation-checkpointing setting. Stage 2 runs the whole Stage-2 loss
(latent loop, step-wise alignment, Policy Head) with every row at 4 CoT segments, so
N = 4; its anchors are random vectors of the right size (their values do not change
the cost). Each variant runs in a fresh process, so memory readings do not mix.

  step time     median wall time of a training step after `warmup_steps`
  peak memory   CUDA: torch.cuda.max_memory_allocated; CPU: peak resident set size
                (sampled every 5 ms) during the timed steps
Targets (one run, ratios Stage 2 / Stage 1): step time <= 1.5, peak memory <= 1.3.

    python benchmarks/stage2_step.py                          # embedded SmolLM2-135M, CPU
    python benchmarks/stage2_step.py --device cuda --bf16 true
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field

import torch
from common import StepTimer, command_line, load_model, machine_info
from transformers import HfArgumentParser
from trl import SFTConfig

from lasar_trl.atomic import write_json_atomic
from lasar_trl.data import load_dataset_spec
from lasar_trl.modeling.loading import EMBEDDED_MODEL
from lasar_trl.sid import build_sid_map
from lasar_trl.tasks import recommendation_dataset
from lasar_trl.trainers.lasar_sft_config import LasarSFTConfig
from lasar_trl.trainers.lasar_sft_trainer import LasarSFTTrainer
from lasar_trl.trainers.sft import SidSFTTrainer

TARGETS = {"step_time": 1.5, "peak_memory": 1.3}
DEPTH = 4


@dataclass
class StepArguments:
    model: str = field(default=EMBEDDED_MODEL, metadata={"help": "Base model: path, hub id or the embedded default."})
    checkpoint: str | None = field(default=None, metadata={"help": "A lasar checkpoint folder (replaces --model)."})
    sid_map: str | None = field(default=None, metadata={"help": "sid_map.json; default: the checkpoint's, else built."})
    dataset: str = field(default="ml-100k", metadata={"help": "Dataset spec; rows are its first training windows."})
    batch_size: int = field(default=8, metadata={"help": "per_device_train_batch_size of both trainers."})
    warmup_steps: int = field(default=2, metadata={"help": "Untimed steps first (allocator, optimizer state)."})
    timed_steps: int = field(default=5, metadata={"help": "Steps timed per variant."})
    activation_checkpointing: bool = field(default=False, metadata={"help": "The same setting for both."})
    bf16: bool = field(default=False, metadata={"help": "bf16 mixed precision (GPU)."})
    device: str = field(default="cpu", metadata={"help": "cpu or cuda."})
    variant: str | None = field(default=None, metadata={"help": "Internal: run one variant in this process."})
    output_json: str = field(default="benchmarks/results/stage2_step.json", metadata={"help": "Output file."})


def parse_args(argv: list[str] | None = None) -> StepArguments:
    """The command line (`argv`, else sys.argv) as StepArguments; tests parse the documented commands with it."""
    return HfArgumentParser(StepArguments).parse_args_into_dataclasses(argv)[0]


def run_variant(args: StepArguments) -> dict:
    data = load_dataset_spec(args.dataset)
    model, tokenizer, sid_map = load_model(
        data, model=args.model, checkpoint=args.checkpoint, sid_map=args.sid_map, device=args.device, dtype="float32"
    )
    rows = args.batch_size * (args.warmup_steps + args.timed_steps)
    dataset = recommendation_dataset(data.splits["train"][:rows], sid_map).select_columns(["prompt", "completion"])
    training = dict(
        output_dir=tempfile.mkdtemp(prefix="stage2_step-"),
        max_steps=args.warmup_steps + args.timed_steps,
        per_device_train_batch_size=args.batch_size,
        learning_rate=1e-5,
        bf16=args.bf16,
        report_to="none",
        save_strategy="no",
        logging_strategy="no",
        seed=0,
        activation_checkpointing=args.activation_checkpointing,
        use_cpu=args.device == "cpu",
        dataloader_num_workers=0,
        shuffle_dataset=False,
        disable_tqdm=True,
    )
    timer = StepTimer(args.warmup_steps, cuda=args.device.startswith("cuda"))
    if args.variant == "stage1":
        trainer = SidSFTTrainer(
            model=model,
            args=SFTConfig(**training),
            train_dataset=dataset,
            processing_class=tokenizer,
            sid_map=sid_map,
            callbacks=[timer],
        )
    else:
        generator = torch.Generator().manual_seed(0)
        anchors = [torch.randn(DEPTH, model.config.hidden_size, generator=generator).tolist() for _ in range(rows)]
        trainer = LasarSFTTrainer(
            model=model,
            args=LasarSFTConfig(**training),
            train_dataset=dataset.add_column("anchors", anchors),
            processing_class=tokenizer,
            sid_map=sid_map,
            callbacks=[timer],
        )
    trainer.train()
    return {
        "step_seconds": timer.seconds,
        "median_step_seconds": statistics.median(timer.seconds),
        "peak_memory_bytes": timer.peak_memory(),
        "torch_threads": torch.get_num_threads(),
    }


def main(args: StepArguments) -> dict:
    sid_map_file = args.sid_map
    if not (args.sid_map or args.checkpoint):  # build once, not once per variant
        sid_map_file = os.path.join(tempfile.mkdtemp(prefix="stage2_step-"), "sid_map.json")
        build_sid_map(load_dataset_spec(args.dataset)).save(os.path.dirname(sid_map_file))
    variants = {}
    for variant in ("stage1", "stage2"):
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            command = [
                sys.executable,
                __file__,
                "--variant",
                variant,
                "--output_json",
                out.name,
                *[
                    f"--{k}={v}"
                    for k, v in asdict(args).items()
                    if v is not None and k not in ("variant", "output_json", "sid_map")
                ],
            ]
            if sid_map_file:
                command.append(f"--sid_map={sid_map_file}")
            print(f"{variant}: {args.warmup_steps} warm-up + {args.timed_steps} timed steps", flush=True)
            subprocess.run(command, check=True)
            variants[variant] = json.loads(open(out.name).read())
    ratios = {
        "step_time": variants["stage2"]["median_step_seconds"] / variants["stage1"]["median_step_seconds"],
        "peak_memory": variants["stage2"]["peak_memory_bytes"] / variants["stage1"]["peak_memory_bytes"],
    }
    return {
        "command": command_line(),
        "machine": machine_info(args.device, "float32 weights" + (", bf16" if args.bf16 else "")),
        "arguments": asdict(args),
        "stage2_depth": DEPTH,
        "memory": "CUDA max_memory_allocated" if args.device.startswith("cuda") else "peak RSS during timed steps",
        "variants": variants,
        "ratios": ratios,
        "targets": TARGETS,
        "targets_met": {name: ratio <= TARGETS[name] for name, ratio in ratios.items()},
    }


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.variant:
        write_json_atomic(arguments.output_json, run_variant(arguments))
    else:
        report = main(arguments)
        for name, ratio in report["ratios"].items():
            print(f"{name}: stage2 / stage1 = {ratio:.3f} (target <= {TARGETS[name]})")
        write_json_atomic(arguments.output_json, report)
        print(f"wrote {arguments.output_json}")
