"""Benchmark: our SID beam search vs itself unconstrained vs `model.generate` (DESIGN.md sections 3 and 6).

For every (beams, batch size) it times, on the same ml-100k test requests, interleaved:
  ours           `sid_beam_search`: prefill once, KV cache expanded per beam, trie-constrained
  unconstrained  the same function with `constrained=False`  -> constraint overhead, target <= 1.10
  generate       `model.generate(num_beams=K)` + `SidTrieLogitsProcessor` (prefills the prompt K times)
                 -> ours / generate, target <= 0.50
and checks that constrained outputs are real items and that ours and generate agree on the top-1 item.

    python benchmarks/decode.py                        # embedded SmolLM2-135M, SIDs built for ml-100k
    python benchmarks/decode.py --checkpoint DIR       # a trained lasar checkpoint and its own SID map
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, HfArgumentParser

from lasar_trl.data import load_dataset_spec
from lasar_trl.data.tasks import history_prompt
from lasar_trl.evaluation.recommend import encode_prompts, sid_beam_search
from lasar_trl.modeling.checkpoint import load_recommender
from lasar_trl.modeling.loading import EMBEDDED_MODEL, resolve_model_path
from lasar_trl.sid import SidMap, build_sid_map
from lasar_trl.sid.tokenizer import add_sid_tokens
from lasar_trl.sid.trie import SidTrie, SidTrieLogitsProcessor

CONSTRAINT_TARGET, GENERATE_TARGET = 1.10, 0.50
VARIANTS = ("ours", "unconstrained", "generate")


@dataclass
class BenchmarkArguments:
    model: str = field(default=EMBEDDED_MODEL, metadata={"help": "Base model: path, hub id or the embedded default."})
    checkpoint: str | None = field(default=None, metadata={"help": "A lasar checkpoint folder (overrides --model)."})
    sid_map: str | None = field(default=None, metadata={"help": "sid_map.json; default: the checkpoint's, else built."})
    dataset: str = field(default="ml-100k", metadata={"help": "Dataset spec; requests are its test histories."})
    num_requests: int = field(default=16, metadata={"help": "Requests (test histories) per configuration."})
    repeats: int = field(default=3, metadata={"help": "Timed repetitions, interleaved across variants."})
    beams: list[int] = field(default_factory=lambda: [10, 20], metadata={"help": "Beam counts K."})
    batch_sizes: list[int] = field(default_factory=lambda: [1, 8], metadata={"help": "Requests per batch."})
    device: str = field(default="cpu", metadata={"help": "cpu or cuda."})
    dtype: str = field(default="float32", metadata={"help": "float32, bfloat16 or float16."})
    seed: int = field(default=0, metadata={"help": "Seed of the new SID embedding rows (base model only)."})
    output_json: str = field(default="benchmarks/results/decode.json", metadata={"help": "Where to write results."})


def load(args: BenchmarkArguments, data):
    """(model, tokenizer, sid_map), the model in eval mode on args.device."""
    dtype = getattr(torch, args.dtype)
    given_map = SidMap.load(args.sid_map) if args.sid_map else None
    if args.checkpoint:
        model, tokenizer, sid_map = load_recommender(args.checkpoint, given_map, dtype=dtype, device=args.device)
    else:
        sid_map = given_map or build_sid_map(data)
        path = resolve_model_path(args.model)
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        torch.manual_seed(args.seed)  # add_sid_tokens samples the new rows
        add_sid_tokens(model, tokenizer, sid_map)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    return model.to(args.device).eval(), tokenizer, sid_map


def generation_config(tokenizer, num_beams: int, sid_length: int) -> GenerationConfig:
    """Complete beam-search settings, scored like ours: summed log-probs (length_penalty=0), no sampling."""
    return GenerationConfig(
        do_sample=False, num_beams=num_beams, num_return_sequences=num_beams, max_new_tokens=sid_length + 1,
        min_new_tokens=0, length_penalty=0.0, early_stopping=True, num_beam_groups=1, diversity_penalty=0.0,
        temperature=1.0, top_p=1.0, repetition_penalty=1.0, no_repeat_ngram_size=0, use_cache=True,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id,
    )


def walk_items(trie: SidTrie, sequences: torch.Tensor) -> torch.Tensor:
    """Item index of each (.., L) token row via the trie; -1 where the row is not a valid SID."""
    flat = sequences.reshape(-1, trie.sid_length)
    nodes = trie.root(len(flat))
    for depth in range(trie.sid_length):
        nodes = trie.advance(nodes, depth, flat[:, depth])
    return trie.items_of(nodes).reshape(sequences.shape[:-1])


def main(args: BenchmarkArguments) -> dict:
    data = load_dataset_spec(args.dataset)
    model, tokenizer, sid_map = load(args, data)
    # generate fills unset fields from model.generation_config: neutralise the checkpoint's own
    model.generation_config = GenerationConfig(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    trie = SidTrie.from_sid_map(sid_map, tokenizer).to(args.device)
    length, eos = trie.sid_length, tokenizer.eos_token_id
    windows = data.splits["test"][: args.num_requests]
    prompts = [history_prompt(w.history, sid_map) for w in windows]
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)

    def run(variant: str, batch: dict, num_beams: int) -> torch.Tensor:
        """(B, K, L+1) tokens for generate / (B, K) item indices for ours; unconstrained returns None."""
        if variant == "generate":
            prompt_length = batch["input_ids"].shape[1]
            processor = SidTrieLogitsProcessor(trie, prompt_length, num_beams=num_beams)
            out = model.generate(**batch, generation_config=generation_config(tokenizer, num_beams, length),
                                 logits_processor=[processor])
            return out[:, prompt_length:].reshape(len(batch["input_ids"]), num_beams, -1)
        output = sid_beam_search(model, **batch, trie=trie, num_beams=num_beams, constrained=variant == "ours")
        return trie.items_of(output.leaf_nodes) if variant == "ours" else None

    results = []
    for num_beams in args.beams:
        for batch_size in args.batch_sizes:
            batches = [encode_prompts(tokenizer, prompts[i : i + batch_size], args.device)
                       for i in range(0, len(prompts), batch_size)]
            print(f"beams={num_beams} batch={batch_size}: {len(batches)} batches x {args.repeats} repeats", flush=True)
            for variant in VARIANTS:  # warm-up at this configuration's shapes
                run(variant, batches[0], num_beams)
            times = {v: [] for v in VARIANTS}  # per-request seconds
            outputs = {v: [] for v in VARIANTS}
            for repeat in range(args.repeats):
                for index, batch in enumerate(batches):
                    shift = (repeat + index) % len(VARIANTS)  # rotate the order so no variant always goes first
                    for variant in VARIANTS[shift:] + VARIANTS[:shift]:
                        sync()
                        start = time.perf_counter()
                        output = run(variant, batch, num_beams)
                        sync()
                        elapsed = time.perf_counter() - start
                        rows = len(batch["input_ids"])
                        times[variant] += [elapsed / rows] * rows
                        if repeat == 0:
                            outputs[variant].append(output)
            ms = {v: 1000 * statistics.median(t) for v, t in times.items()}

            ours_items = torch.cat(outputs["ours"])  # (N, K)
            generated = torch.cat(outputs["generate"])  # (N, K, L+1)
            generate_items = walk_items(trie, generated[..., :length])
            generate_valid = (generate_items >= 0) & (generated[..., length] == eos)
            overlap = [len(set(a) & set(b)) / num_beams for a, b in zip(ours_items.tolist(), generate_items.tolist())]
            constraint_ratio, generate_ratio = ms["ours"] / ms["unconstrained"], ms["ours"] / ms["generate"]
            results.append({
                "num_beams": num_beams, "batch_size": batch_size,
                "ms_per_request": ms, "ms_per_request_all": {v: [1000 * x for x in t] for v, t in times.items()},
                "ratio_constrained_over_unconstrained": constraint_ratio,
                "constraint_target_met": constraint_ratio <= CONSTRAINT_TARGET,
                "ratio_ours_over_generate": generate_ratio, "generate_target_met": generate_ratio <= GENERATE_TARGET,
                "valid_rate_ours": (ours_items >= 0).float().mean().item(),
                "valid_rate_generate": generate_valid.float().mean().item(),
                "top1_agreement": (ours_items[:, 0] == generate_items[:, 0]).float().mean().item(),
                "topk_overlap": statistics.mean(overlap),
            })
            print(f"  ours {ms['ours']:.1f} ms, unconstrained {ms['unconstrained']:.1f} ms, "
                  f"generate {ms['generate']:.1f} ms", flush=True)

    return {
        "machine": {
            "processor": platform.processor(), "machine": platform.machine(), "platform": platform.platform(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch_interop_threads": torch.get_num_interop_threads(), "python": platform.python_version(),
            "torch": torch.__version__, "transformers": transformers.__version__, "device": args.device,
            "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
            "dtype": str(model.dtype),
        },
        "command": shlex.join([os.path.basename(sys.executable), *sys.argv]),
        "arguments": asdict(args),
        "num_requests": len(prompts), "mean_prompt_tokens": statistics.mean(len(tokenizer(p)["input_ids"]) for p in prompts),
        "sid_length": length, "num_items": trie.num_items,
        "timing": "median over requests x repeats of batch wall time / batch size, after one warm-up per variant",
        "decode_steps": {"ours": length, "generate": length + 1},  # generate also scores the closing <eos>
        "targets": {"constrained_over_unconstrained": CONSTRAINT_TARGET, "ours_over_generate": GENERATE_TARGET},
        "results": results,
    }


def print_table(report: dict) -> None:
    print(f"\n{report['num_requests']} requests, SID length {report['sid_length']}, {report['num_items']} items, "
          f"{report['machine']['device']} {report['machine']['dtype']}, torch threads {report['machine']['torch_threads']}")
    header = ("beams", "batch", "ours ms", "uncon ms", "gen ms", "con/uncon", "<=1.10", "ours/gen", "<=0.50",
              "top1 agree", "topK overlap", "valid ours/gen")
    print(" | ".join(f"{h:>9}" for h in header))
    for r in report["results"]:
        ms = r["ms_per_request"]
        cells = (r["num_beams"], r["batch_size"], f"{ms['ours']:.1f}", f"{ms['unconstrained']:.1f}",
                 f"{ms['generate']:.1f}", f"{r['ratio_constrained_over_unconstrained']:.3f}",
                 "yes" if r["constraint_target_met"] else "NO", f"{r['ratio_ours_over_generate']:.3f}",
                 "yes" if r["generate_target_met"] else "NO", f"{r['top1_agreement']:.2f}", f"{r['topk_overlap']:.2f}",
                 f"{r['valid_rate_ours']:.2f}/{r['valid_rate_generate']:.2f}")
        print(" | ".join(f"{c:>9}" for c in cells))


if __name__ == "__main__":
    (arguments,) = HfArgumentParser(BenchmarkArguments).parse_args_into_dataclasses()
    with torch.inference_mode():
        report = main(arguments)
    print_table(report)
    Path(arguments.output_json).parent.mkdir(parents=True, exist_ok=True)
    Path(arguments.output_json).write_text(json.dumps(report, indent=2))
    print(f"\nwrote {arguments.output_json}")
