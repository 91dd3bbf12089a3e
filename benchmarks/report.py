"""Turn the benchmark JSON into docs/results.md with tables and PNG plots, and README's headline table.

    python benchmarks/report.py        # reads the JSON in benchmarks/results/ (quality, latency*, main_job_ml100k)

Only what the JSON holds is shown, each table with the command that measured it and the
machine it ran on:
  quality table          per dataset, every variant's mean (and spread over seeds) of HR@5/10/20,
                         NDCG@5/10/20, mean depth and training minutes
  latency table + bars   per latency JSON (one dataset's quality run each): ms per request per
                         variant and configuration, and the ratios
  depth histograms       the depths LASAR chose before RL (Stage 2) and after (Stage 3)
  training curves        GRPO reward and mean depth, Stage-2 alignment KL, from the Trainers'
                         trainer_state.json in the quality run of the first latency JSON whose
                         run folder is still on disk
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

from lasar_trl.atomic import atomic_path  # noqa: E402

QUALITY_COLUMNS = ["hr@5", "hr@10", "hr@20", "ndcg@5", "ndcg@10", "ndcg@20", "mean_depth", "train_minutes"]
BEFORE_RL, AFTER_RL = "LASAR without RL (Stage 2)", "LASAR (Stage 2 + GRPO)"
CURVES = [
    ("stage3", "reward", "GRPO reward"),
    ("stage3", "depth/mean", "GRPO mean depth"),
    ("stage2", "align_kl", "Stage-2 alignment KL"),
]


def ratio_text(value: float | None) -> str:
    """latency.py records a ratio it could not measure as null."""
    return "n/a" if value is None else f"{value:.2f}"


def machine_line(machine: dict) -> str:
    return f"{machine['device_name']} ({machine['cpu_count']} CPUs, {machine['device']}, torch {machine['torch']})"


def main_job_section(summary: dict, json_path: str) -> list[str]:
    """README's headline table: the main job's summary.json, its command, machine and timing."""
    machine, minutes = summary["machine"], summary["train_minutes"]
    results = summary["results"]
    first = next(iter(results.values()))
    gpu = machine["gpu"] or "no GPU"
    stages = ", ".join(f"{stage.replace('stage', 'Stage ')} {value:.1f} min" for stage, value in minutes.items())
    lines = [
        f"Measured: `{summary['command']}` on {machine['cpu']} ({machine['cpu_count']} cores, {gpu}), torch "
        f"{machine['torch']}, {machine['date']}: **{summary['total_minutes']:.1f} min** in all ({stages}; the rest "
        f"is SIDs and evaluation). {first['num_samples']} {summary['dataset']} {summary['split']} users, "
        f"{first['num_beams']} beams, `exclude_history` {first['exclude_history']} (`{json_path}`):",
        "",
        "| variant | HR@10 | NDCG@10 | HR@20 | NDCG@20 | mean depth |",
        "|---|---|---|---|---|---|",
    ]
    for label, metrics in results.items():
        cells = [f"{metrics[key]:.4f}".lstrip("0") for key in ("hr@10", "ndcg@10", "hr@20", "ndcg@20")]
        lines.append(f"| {label} | {' | '.join(cells)} | {metrics['mean_depth']:.2f} |")
    rewards = summary.get("grpo_exact_match_per_logged_window", [])
    if summary.get("stage2_before_rl"):
        lines += ["", f"Stage 2's mean depth before RL: {summary['stage2_before_rl']['mean_depth']:.2f}."]
    if rewards:
        lines.append(
            f"GRPO's mean exact-match reward per logged window ({len(rewards)} windows): "
            f"{min(rewards):.4f} to {max(rewards):.4f}; windows at 0: {sum(value == 0 for value in rewards)}."
        )
    return lines


def replace_between_markers(text: str, name: str, block: list[str]) -> str:
    """`text` with the lines between `<!-- NAME:start -->` and `<!-- NAME:end -->` replaced by `block`."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
        raise ValueError(f"expected one {start} ... {end} pair")
    head, rest = text.split(start)
    return head + start + "\n" + "\n".join(block) + "\n" + end + rest.split(end, 1)[1]


def quality_section(quality: dict) -> list[str]:
    lines = [
        "## Quality",
        "",
        f"Budget `{quality['budget']}`, seeds {quality['seeds']}.",
        "",
    ]
    if not quality["complete"]:
        lines += [
            "The run was stopped before every dataset had every seed: each dataset below lists the seeds it has.",
            "",
        ]
    for dataset, result in quality["datasets"].items():
        evaluation = result["evaluation"]
        runs: dict[str, list[str]] = {}  # seeds by the command and machine that measured them
        for seed, run in result["measured_by"].items():
            runs.setdefault(f"`{run['command']}` on {machine_line(run['machine'])}", []).append(seed)
        lines += [
            f"### {dataset} (seeds {result['seeds']})",
            "",
            *(f"Seeds {', '.join(seeds)}: {run}." for run, seeds in runs.items()),
            "",
            f"{evaluation['users']} test users, {evaluation['num_beams']} beams, exclude_history="
            f"{evaluation['exclude_history']}; mean over seeds (spread max - min in brackets when >1 seed); "
            f"train minutes are on top of the shared Stage 1 (seed {result['seeds'][-1]}'s took "
            f"{evaluation['stage1_train_minutes']:.1f} min).",
            "",
            "| variant | " + " | ".join(QUALITY_COLUMNS) + " |",
            "|---" * (len(QUALITY_COLUMNS) + 1) + "|",
        ]
        for name, variant in result["variants"].items():
            cells = []
            for column in QUALITY_COLUMNS:
                if column not in variant["mean"]:
                    cells.append("-")
                    continue
                cell = (
                    f"{variant['mean'][column]:.4f}"
                    if column.startswith(("hr", "ndcg"))
                    else f"{variant['mean'][column]:.2f}"
                )
                if len(result["seeds"]) > 1:
                    cell += f" ({variant['spread'][column]:.4f})"
                cells.append(cell)
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def latency_section(latency: dict, out_dir: Path, plot_name: str) -> list[str]:
    variants = list(latency["configurations"][0]["variants"])
    lines = [
        f"## Latency: {latency['dataset']}",
        "",
        f"Command: `{latency['command']}` ({latency['requests']} {latency['dataset']} test "
        f"requests, {latency['repeats']} repeat(s), checkpoints of `{latency['run_dir']}`). Machine: "
        f"{machine_line(latency['machine'])}.",
        "",
        f"**Explicit CoT / LASAR at batch {latency['headline']['batch_size']}, beam "
        f"{latency['headline']['num_beams']}: {latency['explicit_cot_over_lasar']:.2f}x.** "
        f"Targets met: {latency['targets_met']}.",
        "",
        "ms per request (mean depth / rationale tokens in brackets):",
        "",
        "| batch | beams | " + " | ".join(variants) + " | LASAR / N=0 | CoT / LASAR | predicted | fidelity |",
        "|---" * (len(variants) + 6) + "|",
    ]
    for config in latency["configurations"]:
        cells = [
            f"{v['ms_per_request']:.1f} ({v['mean_depth']:.1f} / {v['mean_rationale_tokens']:.0f})"
            for v in config["variants"].values()
        ]
        r = config["ratios"]
        lines.append(
            f"| {config['batch_size']} | {config['num_beams']} | "
            + " | ".join(cells)
            + f" | {r['lasar_over_no_reasoning']:.2f} | {r['explicit_cot_over_lasar']:.2f} | "
            f"{ratio_text(r['predicted_explicit_cot_over_lasar'])} | {ratio_text(r['fidelity'])} |"
        )
    figure, axes = plt.subplots(
        1, len(latency["configurations"]), figsize=(3 * len(latency["configurations"]), 3.2), squeeze=False
    )
    for axis, config in zip(axes[0], latency["configurations"]):
        axis.bar(
            range(len(variants)),
            [config["variants"][v]["ms_per_request"] for v in variants],
            color=["#888888", "#5b8def", "#2a9d8f", "#e76f51"][: len(variants)],
        )
        axis.set_xticks(range(len(variants)), [v.split(" (")[0] for v in variants], rotation=45, ha="right")
        axis.set_title(f"batch {config['batch_size']}, beams {config['num_beams']}", fontsize=9)
        axis.set_ylabel("ms / request")
    save(figure, out_dir / plot_name)
    return [*lines, "", f"![latency per variant](results/{plot_name})", ""]


def depth_section(quality: dict, out_dir: Path) -> list[str]:
    datasets = [
        (name, result)
        for name, result in quality["datasets"].items()
        if BEFORE_RL in result["variants"] and AFTER_RL in result["variants"]
    ]
    figure, axes = plt.subplots(1, len(datasets), figsize=(4.5 * len(datasets), 3.2), squeeze=False)
    lines = ["## Depth before and after RL", ""]
    for axis, (name, result) in zip(axes[0], datasets):
        seen: set[int] = set()
        for offset, label in ((-0.2, BEFORE_RL), (0.2, AFTER_RL)):
            counts: dict[int, int] = {}
            for seed_result in result["variants"][label]["per_seed"].values():
                for depth, count in seed_result["depth_histogram"].items():
                    counts[int(depth)] = counts.get(int(depth), 0) + count
            depths = sorted(counts)
            seen.update(depths)
            axis.bar([d + offset for d in depths], [counts[d] for d in depths], width=0.4, label=label)
            mean = result["variants"][label]["mean"]["mean_depth"]
            lines.append(f"- {name}, {label}: mean depth {mean:.2f}, histogram {dict(sorted(counts.items()))}")
        axis.set_title(name, fontsize=9)
        axis.set_xticks(range(min(seen), max(seen) + 1))  # depths are whole steps
        axis.set_xlabel("latent depth N")
        axis.set_ylabel("requests (all seeds)")
        axis.legend(fontsize=7, loc="lower center")
    save(figure, out_dir / "depth_histograms.png")
    return [*lines, "", "![depth histograms](results/depth_histograms.png)", ""]


def curves_section(run_dir: str, out_dir: Path) -> list[str]:
    figure, axes = plt.subplots(1, len(CURVES), figsize=(4 * len(CURVES), 3), squeeze=False)
    lines = ["## Training curves", "", f"From the Trainers' `trainer_state.json` in `{run_dir}`.", ""]
    for axis, (stage, key, title) in zip(axes[0], CURVES):
        path = os.path.join(run_dir, stage, "trainer_state.json")
        history = json.load(open(path))["log_history"] if os.path.isfile(path) else []
        points = [(entry["step"], entry[key]) for entry in history if key in entry]
        if points:
            axis.plot(*zip(*points), marker="o")
        else:
            axis.text(0.5, 0.5, "no logged steps", ha="center", va="center", transform=axis.transAxes)
        lines.append(f"- {title}: {len(points)} logged step(s)")
        axis.set_title(title, fontsize=9)
        axis.set_xlabel("step")
    save(figure, out_dir / "training_curves.png")
    return [*lines, "", "![training curves](results/training_curves.png)", ""]


def save(figure, path: Path) -> None:
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quality_json", default="benchmarks/results/quality.json")
    parser.add_argument(
        "--latency_json",
        nargs="+",
        default=["benchmarks/results/latency.json", "benchmarks/results/latency_industrial.json"],
        help="one latency.py output per dataset",
    )
    parser.add_argument("--output", default="docs/results.md", help="the report; plots go to results/ beside it")
    parser.add_argument("--main_job_json", default="benchmarks/results/main_job_ml100k.json")
    parser.add_argument("--readme", default="README.md", help="its main-job-results block is rewritten")
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    with open(args.main_job_json) as file:
        readme = replace_between_markers(
            Path(args.readme).read_text(), "main-job-results", main_job_section(json.load(file), args.main_job_json)
        )
    with atomic_path(Path(args.readme)) as temp:
        temp.write_text(readme, encoding="utf-8")
    quality = json.load(open(args.quality_json))
    latencies = {Path(path).stem: json.load(open(path)) for path in args.latency_json}
    curves_run = next((lat["run_dir"] for lat in latencies.values() if os.path.isdir(lat["run_dir"])), None)
    if curves_run is None:
        raise SystemExit(
            f"wrote only the main-job table of {args.readme}: no run_dir of {' '.join(args.latency_json)} exists, "
            f"and {args.output}'s training curves come from one's trainer_state.json files; rerun "
            "benchmarks/latency.py (or restore a run folder) to regenerate the report"
        )
    output = Path(args.output)
    plots = output.parent / "results"
    plots.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Results",
        "",
        "Generated by `python benchmarks/report.py` from "
        f"`{args.quality_json}` and `{'`, `'.join(args.latency_json)}`; every number below was measured by the "
        "command shown with it.",
        "",
    ]
    lines += quality_section(quality)
    lines += depth_section(quality, plots)
    for stem, latency in latencies.items():
        lines += latency_section(latency, plots, f"{stem}.png")
    lines += curves_section(curves_run, plots)
    with atomic_path(output) as temp:
        temp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {output}, {plots}/*.png and the main-job table of {args.readme}")


if __name__ == "__main__":
    main()
