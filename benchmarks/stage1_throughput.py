"""Stage-1 throughput: one epoch of the library's Stage 1 against a plain PyTorch loop.

Both train the same compact backbone (the same weights at the start) on the same rows: the
sequence layout of Stage 1 (`stage1_layout: sequences`, one causal pass per user over
`s1 <bot> s2 <bot> ...`, plus the title <-> SID rows), with the same batch size, learning
rate and AdamW. The plain loop is the floor: shuffled batches, right padding, the model's
own loss, `backward`, `step`. The library run is `SidSFTTrainer` (TRL's SFTTrainer) for one
epoch; its time is the Trainer's `train_runtime`. Target: library / plain <= 2.

    python benchmarks/stage1_throughput.py                              # ml-100k, scratch:tiny, full epoch
    python benchmarks/stage1_throughput.py --max_rows 256 --output_json /tmp/t.json   # a quick look
"""

from __future__ import annotations

import copy
import random
import tempfile
import time
from dataclasses import dataclass, field

import torch
from common import command_line, machine_info
from transformers import HfArgumentParser
from trl import SFTConfig

from lasar_trl.atomic import write_json_atomic
from lasar_trl.data import load_dataset_spec
from lasar_trl.modeling.scratch import build_scratch_backbone
from lasar_trl.sid import SidMap, build_sid_map
from lasar_trl.sid.tokenizer import add_sid_tokens
from lasar_trl.stages.common import setup_run
from lasar_trl.stages.stage1 import scratch_tokenizer_texts
from lasar_trl.tasks import stage1_sequence_dataset
from lasar_trl.trainers.sft import SidSFTTrainer


@dataclass
class Arguments:
    dataset: str = field(default="ml-100k", metadata={"help": "Dataset spec."})
    sid_map: str | None = field(default=None, metadata={"help": "sid_map.json; built with the defaults when unset."})
    model: str = field(default="scratch:tiny", metadata={"help": "A scratch:<preset> backbone."})
    max_history: int = field(default=50, metadata={"help": "History limit of the sequences."})
    batch_size: int = field(default=32, metadata={"help": "Rows per step, both runs."})
    learning_rate: float = field(default=3e-3, metadata={"help": "AdamW learning rate, both runs."})
    max_rows: int | None = field(default=None, metadata={"help": "Time this many rows instead of the epoch."})
    seed: int = field(default=0, metadata={"help": "Backbone, tokenizer and shuffling seed."})
    output_json: str = field(default="benchmarks/results/stage1_throughput.json", metadata={"help": "Result file."})


def parse_args(argv: list[str] | None = None) -> Arguments:
    """The command line (`argv`, else sys.argv) as Arguments; tests parse the documented commands with it."""
    return HfArgumentParser(Arguments).parse_args_into_dataclasses(argv)[0]


def plain_epoch(model, rows: list[dict], batch_size: int, learning_rate: float, pad_id: int, seed: int) -> float:
    """Seconds for one pass of a bare training loop over `rows`."""
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)
    model.train()
    start = time.perf_counter()
    for first in range(0, len(order), batch_size):
        batch = [rows[i] for i in order[first : first + batch_size]]
        width = max(len(row["input_ids"]) for row in batch)
        input_ids = torch.tensor([row["input_ids"] + [pad_id] * (width - len(row["input_ids"])) for row in batch])
        labels = torch.tensor([row["labels"] + [-100] * (width - len(row["labels"])) for row in batch])
        mask = torch.tensor([[1] * len(row["input_ids"]) + [0] * (width - len(row["input_ids"])) for row in batch])
        loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def main(args: Arguments) -> None:
    training_args = SFTConfig(
        output_dir=tempfile.mkdtemp(prefix="stage1-throughput-"),
        num_train_epochs=1,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.01,
        bf16=False,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        logging_steps=50,
        seed=args.seed,
        max_length=None,
        dataloader_num_workers=0,
        disable_tqdm=True,
        activation_checkpointing=False,
    )
    setup_run(training_args)
    data = load_dataset_spec(args.dataset, max_history=args.max_history)
    sid_map = SidMap.load(args.sid_map) if args.sid_map else build_sid_map(data)
    model, tokenizer = build_scratch_backbone(args.model, scratch_tokenizer_texts(data, sid_map), seed=args.seed)
    add_sid_tokens(model, tokenizer, sid_map)
    rows = stage1_sequence_dataset(data, sid_map, tokenizer, args.max_history).shuffle(seed=args.seed)
    if args.max_rows:
        rows = rows.select(range(min(args.max_rows, len(rows))))
    tokens = sum(len(ids) for ids in rows["input_ids"])

    plain_seconds = plain_epoch(
        copy.deepcopy(model), rows.to_list(), args.batch_size, args.learning_rate, tokenizer.pad_token_id, args.seed
    )
    trainer = SidSFTTrainer(
        model=model, args=training_args, train_dataset=rows, processing_class=tokenizer, sid_map=sid_map
    )
    library_seconds = trainer.train().metrics["train_runtime"]

    result = {
        "command": command_line(),
        "machine": machine_info("cpu", torch.float32),
        "dataset": data.name,
        "model": args.model,
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocabulary": len(tokenizer),
        "max_history": args.max_history,
        "batch_size": args.batch_size,
        "rows": len(rows),
        "tokens": tokens,
        "plain_loop_seconds": plain_seconds,
        "library_seconds": library_seconds,
        "library_over_plain": library_seconds / plain_seconds,
        "target_library_over_plain": 2.0,
    }
    write_json_atomic(args.output_json, result)
    print(
        f"{data.name}: {len(rows)} rows, {tokens} tokens; plain loop {plain_seconds:.1f} s, "
        f"library {library_seconds:.1f} s, ratio {result['library_over_plain']:.2f} (target <= 2)",
        flush=True,
    )


if __name__ == "__main__":
    main(parse_args())
