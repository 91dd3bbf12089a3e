"""Inference cost of latent reasoning: latency at N = 0, 2, 4, 8 latent steps.

Per (beams K, batch size), on the same ml-100k test requests, timed interleaved after a warm-up:
  prefill    the prompt alone (`run_latent_loop` with N = 0)
  N = n      prefill + n latent steps + the trie-constrained beam search over the L SID tokens
Derived, per configuration:
  per_step_ms   least-squares slope of latency over N: what one latent step adds
  token_ms      (latency at N = 0 - prefill) / L: one decoded SID token of the same batch
  target        per_step_ms <= token_ms (a latent step is one position for B rows; a decoded
                token is one position for B x K beams)

    python benchmarks/latent_latency.py                      # embedded SmolLM2-135M + SIDs for ml-100k
    python benchmarks/latent_latency.py --checkpoint DIR     # a trained checkpoint (depth is forced)
"""

from __future__ import annotations

import itertools
import statistics
from dataclasses import asdict, dataclass, field

import torch
from common import DTYPES, command_line, load_model, machine_info, time_interleaved
from transformers import HfArgumentParser

from lasar_trl.atomic import write_json_atomic
from lasar_trl.data import load_dataset_spec
from lasar_trl.decoding import sid_beam_search
from lasar_trl.evaluation.recommend import encode_prompts
from lasar_trl.modeling.lasar import get_lasar
from lasar_trl.modeling.latent import run_latent_loop
from lasar_trl.modeling.loading import EMBEDDED_MODEL
from lasar_trl.sid.trie import SidTrie
from lasar_trl.tasks import history_prompt


@dataclass
class LatencyArguments:
    model: str = field(default=EMBEDDED_MODEL, metadata={"help": "Base model: path, hub id or the embedded default."})
    checkpoint: str | None = field(default=None, metadata={"help": "A lasar checkpoint folder (replaces --model)."})
    sid_map: str | None = field(default=None, metadata={"help": "sid_map.json; default: the checkpoint's, else built."})
    dataset: str = field(default="ml-100k", metadata={"help": "Dataset spec; the requests are its test histories."})
    num_requests: int = field(default=16, metadata={"help": "Requests per configuration."})
    repeats: int = field(default=3, metadata={"help": "Timed repetitions, interleaved across depths."})
    depths: list[int] = field(default_factory=lambda: [0, 2, 4, 8], metadata={"help": "Latent depths N."})
    beams: list[int] = field(default_factory=lambda: [10, 20], metadata={"help": "Beam counts K."})
    batch_sizes: list[int] = field(default_factory=lambda: [1, 8], metadata={"help": "Requests per batch."})
    device: str = field(default="cpu", metadata={"help": "cpu or cuda."})
    dtype: str = field(default="float32", metadata={"help": "Weights' dtype.", "choices": DTYPES})
    output_json: str = field(default="benchmarks/results/latent_latency.json", metadata={"help": "Output file."})

    def __post_init__(self):
        if min(self.depths) != 0 or len(set(self.depths)) < 2:  # the slope needs N = 0 and another depth
            raise ValueError(f"--depths must include 0 and at least one other depth, got {self.depths}")


def parse_args(argv: list[str] | None = None) -> LatencyArguments:
    """The command line (`argv`, else sys.argv) as LatencyArguments; tests parse the documented commands with it."""
    return HfArgumentParser(LatencyArguments).parse_args_into_dataclasses(argv)[0]


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over xs."""
    mean_x, mean_y = statistics.mean(xs), statistics.mean(ys)
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / sum((x - mean_x) ** 2 for x in xs)


def main(args: LatencyArguments) -> dict:
    data = load_dataset_spec(args.dataset)
    model, tokenizer, sid_map = load_model(
        data, model=args.model, checkpoint=args.checkpoint, sid_map=args.sid_map, device=args.device, dtype=args.dtype
    )
    lasar = get_lasar(model)
    projection = lasar.latent_projection if lasar is not None else None
    trie = SidTrie.from_sid_map(sid_map, tokenizer).to(args.device)
    length = trie.sid_length
    prompts = [history_prompt(w.history, sid_map) for w in data.splits["test"][: args.num_requests]]
    variants = ["prefill", *(f"N={n}" for n in args.depths)]

    def run(variant: str, batch: dict, num_beams: int) -> None:
        if variant == "prefill":
            no_steps = batch["input_ids"].new_zeros(len(batch["input_ids"]))
            run_latent_loop(model, batch["input_ids"], batch["attention_mask"], no_steps)
            return
        depth = int(variant.removeprefix("N="))
        steps = batch["input_ids"].new_full((len(batch["input_ids"]),), depth)
        sid_beam_search(model, **batch, trie=trie, num_beams=num_beams, num_steps=steps, latent_projection=projection)

    results = []
    for num_beams, batch_size in itertools.product(args.beams, args.batch_sizes):
        batches = [
            encode_prompts(tokenizer, prompts[i : i + batch_size], args.device)
            for i in range(0, len(prompts), batch_size)
        ]
        print(f"beams {num_beams}, batch {batch_size}: {len(batches)} batches x {args.repeats} repeats", flush=True)
        ms, _, _ = time_interleaved(
            lambda variant, batch, num_beams=num_beams: run(variant, batch, num_beams),
            variants,
            batches,
            args.repeats,
            args.device,
        )
        per_step = slope(list(args.depths), [ms[f"N={n}"] for n in args.depths])
        token = (ms["N=0"] - ms["prefill"]) / length
        results.append(
            {
                "num_beams": num_beams,
                "batch_size": batch_size,
                "ms_per_request": ms,
                "per_step_ms": per_step,
                "token_ms": token,
                "per_step_over_token": per_step / token,
                "target_met": per_step <= token,
                "over_no_reasoning": {f"N={n}": ms[f"N={n}"] / ms["N=0"] for n in args.depths if n},
            }
        )
        print(
            "  "
            + ", ".join(f"{v} {t:.1f}" for v, t in ms.items())
            + f" ms/request; latent step {per_step:.2f} ms vs decoded token {token:.2f} ms",
            flush=True,
        )

    return {
        "command": command_line(),
        "machine": machine_info(args.device, model.dtype),
        "arguments": asdict(args),
        "num_requests": len(prompts),
        "sid_length": length,
        "num_items": trie.num_items,
        "mean_prompt_tokens": statistics.mean(len(tokenizer(p)["input_ids"]) for p in prompts),
        "timing": "median over requests x repeats of (batch wall time / batch size), one warm-up per variant first",
        "target": "per_step_ms <= token_ms",
        "results": results,
    }


def print_table(report: dict) -> None:
    machine = report["machine"]
    depths = report["arguments"]["depths"]
    print(
        f"\n{report['num_requests']} requests, SID length {report['sid_length']}; {machine['device']} "
        f"{machine['dtype']}, {machine['torch_threads']} torch threads; ms per request"
    )
    header = ("beams", "batch", "prefill", *(f"N={n}" for n in depths), "ms/step", "ms/token", "step/tok", "<=1")
    print(" | ".join(f"{h:>8}" for h in header))
    for r in report["results"]:
        ms = r["ms_per_request"]
        cells = (
            r["num_beams"],
            r["batch_size"],
            f"{ms['prefill']:.1f}",
            *(f"{ms[f'N={n}']:.1f}" for n in depths),
            f"{r['per_step_ms']:.2f}",
            f"{r['token_ms']:.2f}",
            f"{r['per_step_over_token']:.2f}",
            "yes" if r["target_met"] else "NO",
        )
        print(" | ".join(f"{c:>8}" for c in cells))


if __name__ == "__main__":
    arguments = parse_args()
    with torch.inference_mode():
        report = main(arguments)
    print_table(report)
    write_json_atomic(arguments.output_json, report)
    print(f"\nwrote {arguments.output_json}")
