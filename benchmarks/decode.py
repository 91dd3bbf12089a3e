"""Benchmark our SID beam search against itself unconstrained and against `model.generate`.

Per (beams K, batch size), on the same ml-100k test requests, timed interleaved after a warm-up:
  ours           `sid_beam_search`: prefill once, KV cache expanded per beam, trie-constrained
  unconstrained  the same with `constrained=False`      -> ours / unconstrained, target <= 1.10
  generate       `model.generate(num_beams=K)` + `SidTrieLogitsProcessor`, which prefills the
                 prompt K times                          -> ours / generate, target <= 0.50
It also checks that constrained outputs are real items and that ours and generate agree on top-1.

    python benchmarks/decode.py                      # embedded SmolLM2-135M + SIDs built for ml-100k
    python benchmarks/decode.py --checkpoint DIR     # a trained lasar checkpoint with its own SID map
"""

from __future__ import annotations

import itertools
import statistics
from dataclasses import asdict, dataclass, field

import torch
from common import DTYPES, command_line, load_model, machine_info, time_interleaved
from transformers import GenerationConfig, HfArgumentParser

from lasar_trl.atomic import write_json_atomic
from lasar_trl.data import load_dataset_spec
from lasar_trl.decoding import sid_beam_search
from lasar_trl.evaluation.recommend import encode_prompts
from lasar_trl.modeling.loading import EMBEDDED_MODEL
from lasar_trl.sid.trie import SidTrie, SidTrieLogitsProcessor
from lasar_trl.tasks import history_prompt

TARGETS = {"ours_over_unconstrained": 1.10, "ours_over_generate": 0.50}
VARIANTS = ("ours", "unconstrained", "generate")


@dataclass
class BenchmarkArguments:
    model: str = field(default=EMBEDDED_MODEL, metadata={"help": "Base model: path, hub id or the embedded default."})
    checkpoint: str | None = field(default=None, metadata={"help": "A lasar checkpoint folder (replaces --model)."})
    sid_map: str | None = field(default=None, metadata={"help": "sid_map.json; default: the checkpoint's, else built."})
    dataset: str = field(default="ml-100k", metadata={"help": "Dataset spec; the requests are its test histories."})
    num_requests: int = field(default=16, metadata={"help": "Requests per configuration."})
    repeats: int = field(default=3, metadata={"help": "Timed repetitions, interleaved across variants."})
    beams: list[int] = field(default_factory=lambda: [10, 20], metadata={"help": "Beam counts K."})
    batch_sizes: list[int] = field(default_factory=lambda: [1, 8], metadata={"help": "Requests per batch."})
    device: str = field(default="cpu", metadata={"help": "cpu or cuda."})
    dtype: str = field(default="float32", metadata={"help": "Weights' dtype.", "choices": DTYPES})
    seed: int = field(default=0, metadata={"help": "Seed of the new SID embedding rows (base model only)."})
    output_json: str = field(default="benchmarks/results/decode.json", metadata={"help": "Where to write results."})


def parse_args(argv: list[str] | None = None) -> BenchmarkArguments:
    """The command line (`argv`, else sys.argv) as BenchmarkArguments; tests parse the documented commands with it."""
    return HfArgumentParser(BenchmarkArguments).parse_args_into_dataclasses(argv)[0]


def generation_config(tokenizer, num_beams: int, sid_length: int) -> GenerationConfig:
    """Complete beam-search settings scored like ours: summed log-probs (length_penalty=0), no sampling."""
    return GenerationConfig(
        do_sample=False,
        num_beams=num_beams,
        num_return_sequences=num_beams,
        max_new_tokens=sid_length + 1,
        min_new_tokens=0,
        length_penalty=0.0,
        early_stopping=True,
        num_beam_groups=1,
        diversity_penalty=0.0,
        temperature=1.0,
        top_p=1.0,
        repetition_penalty=1.0,
        no_repeat_ngram_size=0,
        use_cache=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )


def walk_items(trie: SidTrie, sequences: torch.Tensor) -> torch.Tensor:
    """Item index of each SID in (..., L) token rows, followed through the trie; -1 where invalid."""
    flat, nodes = sequences.reshape(-1, trie.sid_length), trie.root(sequences[..., 0].numel())
    for depth in range(trie.sid_length):
        nodes = trie.advance(nodes, depth, flat[:, depth])
    return trie.items_of(nodes).reshape(sequences.shape[:-1])


def main(args: BenchmarkArguments) -> dict:
    data = load_dataset_spec(args.dataset)
    model, tokenizer, sid_map = load_model(
        data,
        model=args.model,
        checkpoint=args.checkpoint,
        sid_map=args.sid_map,
        device=args.device,
        dtype=args.dtype,
        seed=args.seed,
    )
    trie = SidTrie.from_sid_map(sid_map, tokenizer).to(args.device)
    length = trie.sid_length
    prompts = [history_prompt(w.history, sid_map) for w in data.splits["test"][: args.num_requests]]

    def decode(variant: str, batch: dict, num_beams: int) -> torch.Tensor | None:
        """generate: (B, K, L+1) new tokens; ours: (B, K) item indices; unconstrained: None."""
        if variant == "generate":
            prompt_length = batch["input_ids"].shape[1]
            processor = SidTrieLogitsProcessor(trie, prompt_length, num_beams=num_beams)
            out = model.generate(
                **batch, generation_config=generation_config(tokenizer, num_beams, length), logits_processor=[processor]
            )
            return out[:, prompt_length:].reshape(len(batch["input_ids"]), num_beams, -1)
        output = sid_beam_search(model, **batch, trie=trie, num_beams=num_beams, constrained=variant == "ours")
        return trie.items_of(output.leaf_nodes) if variant == "ours" else None

    results = []
    for num_beams, batch_size in itertools.product(args.beams, args.batch_sizes):
        batches = [
            encode_prompts(tokenizer, prompts[i : i + batch_size], args.device)
            for i in range(0, len(prompts), batch_size)
        ]
        print(f"beams {num_beams}, batch {batch_size}: {len(batches)} batches x {args.repeats} repeats", flush=True)
        ms, seconds, outputs = time_interleaved(
            lambda variant, batch, num_beams=num_beams: decode(variant, batch, num_beams),
            VARIANTS,
            batches,
            args.repeats,
            args.device,
        )

        ours_items, generated = torch.cat(outputs["ours"]), torch.cat(outputs["generate"])  # (N, K), (N, K, L+1)
        generate_items = walk_items(trie, generated[..., :length])
        generate_valid = (generate_items >= 0) & (generated[..., length] == tokenizer.eos_token_id)
        overlap = [len(set(a) & set(b)) / num_beams for a, b in zip(ours_items.tolist(), generate_items.tolist())]
        ratios = {
            "ours_over_unconstrained": ms["ours"] / ms["unconstrained"],
            "ours_over_generate": ms["ours"] / ms["generate"],
        }
        results.append(
            {
                "num_beams": num_beams,
                "batch_size": batch_size,
                "ms_per_request": ms,
                "ratios": ratios,
                "targets_met": {name: ratio <= TARGETS[name] for name, ratio in ratios.items()},
                "valid_rate": {
                    "ours": (ours_items >= 0).float().mean().item(),
                    "generate": generate_valid.float().mean().item(),
                },
                "top1_agreement": (ours_items[:, 0] == generate_items[:, 0]).float().mean().item(),
                "topk_overlap": statistics.mean(overlap),
                "ms_per_request_all": {v: [round(1000 * s, 2) for s in times] for v, times in seconds.items()},
            }
        )
        print("  " + ", ".join(f"{v} {t:.1f} ms/request" for v, t in ms.items()), flush=True)

    return {
        "command": command_line(),
        "machine": machine_info(args.device, model.dtype),
        "arguments": asdict(args),
        "num_requests": len(prompts),
        "sid_length": length,
        "num_items": trie.num_items,
        "mean_prompt_tokens": statistics.mean(len(tokenizer(p)["input_ids"]) for p in prompts),
        "timing": "median over requests x repeats of (batch wall time / batch size), one warm-up per variant first",
        "decode_steps": {"ours": length, "generate": length + 1},  # generate also scores the closing <eos>
        "targets": TARGETS,
        "results": results,
    }


def print_table(report: dict) -> None:
    machine = report["machine"]
    print(
        f"\n{report['num_requests']} requests, SID length {report['sid_length']}, {report['num_items']} items; "
        f"{machine['device']} {machine['dtype']}, {machine['torch_threads']} torch threads; ms per request"
    )
    header = (
        "beams",
        "batch",
        "ours",
        "unconstr.",
        "generate",
        "ours/unc",
        "<=1.10",
        "ours/gen",
        "<=0.50",
        "top1 agr",
        "topK ovl",
        "valid o/g",
    )
    print(" | ".join(f"{h:>9}" for h in header))
    for r in report["results"]:
        ms, ratios, met = r["ms_per_request"], r["ratios"], r["targets_met"]
        cells = (
            r["num_beams"],
            r["batch_size"],
            *(f"{ms[v]:.1f}" for v in VARIANTS),
            f"{ratios['ours_over_unconstrained']:.3f}",
            "yes" if met["ours_over_unconstrained"] else "NO",
            f"{ratios['ours_over_generate']:.3f}",
            "yes" if met["ours_over_generate"] else "NO",
            f"{r['top1_agreement']:.2f}",
            f"{r['topk_overlap']:.2f}",
            f"{r['valid_rate']['ours']:.2f}/{r['valid_rate']['generate']:.2f}",
        )
        print(" | ".join(f"{c:>9}" for c in cells))


if __name__ == "__main__":
    arguments = parse_args()
    with torch.inference_mode():
        report = main(arguments)
    print_table(report)
    write_json_atomic(arguments.output_json, report)
    print(f"\nwrote {arguments.output_json}")
