"""Serving latency per request: no reasoning, fixed N = 4, LASAR and explicit CoT, in one run.

    python benchmarks/latency.py --budget smoke          # after benchmarks/quality.py --budget smoke
    python benchmarks/latency.py --budget full           # after benchmarks/quality.py --budget full

The checkpoints are those benchmarks/quality.py trained for one dataset and seed (`--run_dir`):
  no reasoning (N=0)   Stage 1
  fixed N=4            LASAR forced to 4 latent steps (the same weights: only the depth differs)
  LASAR                LASAR at its Policy Head's depths
  explicit CoT         the explicit-CoT model: its greedy rationale (real length), then the search
Every variant runs `recommend` (SID-constrained beam search, top 10) on the same test requests, at
batch 1 and 8 and beams 10, 20 and 50, interleaved (the order rotates) after a warm-up; a request's
time is its batch's wall time over the batch size, and each variant's number is the median.

Derived per configuration, from the same run:
  lasar_over_no_reasoning        target <= 1.10 (the paper: 1.07-1.16)
  fixed4_over_no_reasoning       measured
  explicit_cot_over_lasar        measured
  rationale_token_ms             one decoded rationale token: (explicit CoT - no reasoning) / R,
                                 R the mean rationale length (its share of re-reading the rationale
                                 before the SID search included)
  predicted_explicit_cot_over_lasar
                                 what the token counts predict if a latent step costs one decoded
                                 token: (t0 + R c) / (t0 + N c), N the mean LASAR depth
  fidelity                       measured / predicted, target >= 0.9 (equivalently: LASAR takes at
                                 most 1/0.9 of no reasoning + N decoded tokens)
  (predicted and fidelity are null when explicit CoT is not measurably slower than no reasoning)
On a GPU at beam 50, the paper's explicit_cot_over_lasar >= 20 is a target too.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics

import torch
from common import command_line, machine_info, time_interleaved

from lasar_trl.atomic import write_json_atomic
from lasar_trl.data import load_dataset_spec
from lasar_trl.evaluation.recommend import recommend
from lasar_trl.modeling.checkpoint import load_recommender
from lasar_trl.sid.trie import SidTrie

BUDGETS = {
    "smoke": dict(run_dir="outputs/quality_smoke/ml-100k/seed42", requests=8, repeats=1),
    "full": dict(run_dir="outputs/quality/ml-100k/seed42", requests=16, repeats=1),
}
VARIANTS = {  # name -> (folder in the run dir, forced depth)
    "no reasoning (N=0)": ("stage1", None),
    "fixed N=4": ("stage3", 4),
    "LASAR": ("stage3", None),
    "explicit CoT": ("explicit_cot", None),
}
TARGETS = {"lasar_over_no_reasoning_max": 1.10, "fidelity_min": 0.9, "gpu_beam50_explicit_cot_over_lasar_min": 20.0}


def time_configuration(
    models: dict,
    histories: list,
    batch_size: int,
    num_beams: int,
    repeats: int,
    max_rationale_tokens: int,
    device: str,
) -> dict:
    """Median ms per request of every variant, and what each reasoned for, at one batch size and beam count."""

    def run(name: str, chunk: list):
        model, tokenizer, sid_map, trie, depth = models[name]
        return recommend(
            model,
            tokenizer,
            sid_map,
            chunk,
            top_k=min(10, num_beams),
            num_beams=num_beams,
            batch_size=batch_size,
            trie=trie,
            depth=depth,
            max_rationale_tokens=max_rationale_tokens,
        )

    chunks = [histories[i : i + batch_size] for i in range(0, len(histories), batch_size)]
    medians, _, outputs = time_interleaved(run, list(models), chunks, repeats, device, batch_rows=len)
    result = {"batch_size": batch_size, "num_beams": num_beams, "variants": {}}
    for name, recommendations in outputs.items():
        depths = [d for recs in recommendations for d in recs.depths]
        rationale_tokens = [n for recs in recommendations for n in recs.rationale_tokens]
        result["variants"][name] = {
            "ms_per_request": medians[name],
            "mean_depth": statistics.fmean(depths),
            "mean_rationale_tokens": statistics.fmean(rationale_tokens),
            "requests": len(depths),
        }
    result["ratios"] = ratios(result["variants"])
    return result


def ratios(variants: dict) -> dict:
    """The measured ratios and what the token counts predict (see the module docstring)."""
    t0 = variants["no reasoning (N=0)"]["ms_per_request"]
    lasar, cot = variants["LASAR"], variants["explicit CoT"]
    token = (cot["ms_per_request"] - t0) / cot["mean_rationale_tokens"]
    measured = cot["ms_per_request"] / lasar["ms_per_request"]
    # A rationale that costs no measurable time (timing noise on a tiny model) predicts nothing.
    predicted = (t0 + cot["mean_rationale_tokens"] * token) / (t0 + lasar["mean_depth"] * token) if token > 0 else None
    return {
        "lasar_over_no_reasoning": lasar["ms_per_request"] / t0,
        "fixed4_over_no_reasoning": variants["fixed N=4"]["ms_per_request"] / t0,
        "explicit_cot_over_lasar": measured,
        "rationale_token_ms": token,
        "predicted_explicit_cot_over_lasar": predicted,
        "fidelity": measured / predicted if predicted else None,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", choices=list(BUDGETS), default="smoke")
    parser.add_argument("--run_dir", help="a quality run (DATASET/seedS folder); default: by budget")
    parser.add_argument("--dataset", default="ml-100k", help="its test histories are the requests")
    parser.add_argument("--batch_sizes", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--beams", nargs="+", type=int, default=[10, 20, 50])
    parser.add_argument("--max_rationale_tokens", type=int, default=128, help="explicit CoT's longest rationale")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--output_json", default="benchmarks/results/latency.json")
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    budget = BUDGETS[args.budget]
    run_dir = args.run_dir or budget["run_dir"]
    if args.device == "cpu":
        torch.set_num_threads(len(os.sched_getaffinity(0)))

    models, loaded = {}, {}
    for name, (folder, depth) in VARIANTS.items():
        path = os.path.join(run_dir, folder)
        if path not in loaded:
            model, tokenizer, sid_map = load_recommender(path, device=args.device)
            loaded[path] = (model, tokenizer, sid_map, SidTrie.from_sid_map(sid_map, tokenizer).to(model.device))
        models[name] = (*loaded[path], depth)
    data = load_dataset_spec(args.dataset)
    histories = [list(w.history) for w in data.splits["test"][: budget["requests"]]]

    configurations = []
    for batch_size, num_beams in itertools.product(args.batch_sizes, args.beams):
        result = time_configuration(
            models, histories, batch_size, num_beams, budget["repeats"], args.max_rationale_tokens, args.device
        )
        configurations.append(result)
        line = ", ".join(f"{name} {v['ms_per_request']:.1f}" for name, v in result["variants"].items())
        print(
            f"batch {batch_size:2d} beams {num_beams:2d}: ms/request {line}; ratios "
            + ", ".join(f"{k} {v if v is None else round(v, 2)}" for k, v in result["ratios"].items()),
            flush=True,
        )

    headline = next((c for c in configurations if (c["batch_size"], c["num_beams"]) == (1, 20)), configurations[0])
    met = {
        "lasar_over_no_reasoning": all(
            c["ratios"]["lasar_over_no_reasoning"] <= TARGETS["lasar_over_no_reasoning_max"] for c in configurations
        ),
        "fidelity": all((c["ratios"]["fidelity"] or 0) >= TARGETS["fidelity_min"] for c in configurations),
    }
    if args.device.startswith("cuda"):
        beam50 = [c["ratios"]["explicit_cot_over_lasar"] for c in configurations if c["num_beams"] == 50]
        met["gpu_beam50"] = all(r >= TARGETS["gpu_beam50_explicit_cot_over_lasar_min"] for r in beam50)
    report = {
        "command": command_line(),
        "budget": args.budget,
        "run_dir": run_dir,
        "dataset": data.name,
        "requests": len(histories),
        "repeats": budget["repeats"],
        "max_rationale_tokens": args.max_rationale_tokens,
        "checkpoints": {name: os.path.join(run_dir, folder) for name, (folder, _) in VARIANTS.items()},
        "explicit_cot_over_lasar": headline["ratios"]["explicit_cot_over_lasar"],
        "headline": {"batch_size": headline["batch_size"], "num_beams": headline["num_beams"]},
        "configurations": configurations,
        "targets": TARGETS,
        "targets_met": met,
        "machine": machine_info(args.device, torch.float32),
    }
    write_json_atomic(args.output_json, report)
    print(f"explicit CoT / LASAR at batch 1, beam 20: {report['explicit_cot_over_lasar']:.2f}; targets met: {met}")
    print(f"wrote {args.output_json}")


if __name__ == "__main__":
    main()
