"""Evaluation runs: metrics, latency and the most-popular baseline from one code path, and the
table and JSON a recipe reports them in."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..atomic import write_json_atomic
from ..configs import RecScriptArguments
from ..data.schema import RecData, Window
from ..sid.sid_map import SidMap
from ..sid.trie import SidTrie
from .metrics import DEFAULT_KS, catalog_coverage, invalid_rate, ranking_metrics
from .recommend import recommend


def evaluate_recommender(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    sid_map: SidMap,
    windows: Sequence[Window],
    *,
    num_beams: int = 20,
    batch_size: int = 8,
    exclude_items: Sequence[Sequence[str]] | None = None,
    depth: int | None = None,
) -> dict:
    """HR/NDCG@{1,5,10,20}, invalid rate, coverage, latent depth and wall-clock latency on
    `windows`.

    `exclude_items` (per request, e.g. `RecData.seen_items`) are banned from the results;
    `depth` forces a latent depth (else the checkpoint's own choice, see `recommend`).
    Latency is the wall time of `recommend` divided by the number of requests,
    at the given batch size (recorded in the result).
    """
    trie = SidTrie.from_sid_map(sid_map, tokenizer).to(model.device)
    histories = [w.history for w in windows]
    top_k = min(num_beams, max(DEFAULT_KS))
    start = time.perf_counter()
    recs = recommend(
        model,
        tokenizer,
        sid_map,
        histories,
        top_k=top_k,
        num_beams=num_beams,
        batch_size=batch_size,
        exclude_items=exclude_items,
        trie=trie,
        depth=depth,
        show_progress=True,
    )
    elapsed = time.perf_counter() - start
    valid_sids = {sid_map.sid(item) for item in sid_map.item_ids}
    results = ranking_metrics(recs.items, [w.target for w in windows])
    results.update(
        invalid_rate=invalid_rate(recs.generated_sids, valid_sids),
        coverage_at_10=catalog_coverage(recs.items, len(sid_map), 10),
        num_samples=len(windows),
        latency_ms_per_request=1000 * elapsed / len(windows),
        batch_size=batch_size,
        num_beams=num_beams,
        exclude_history=exclude_items is not None,
        mean_depth=sum(recs.depths) / len(recs.depths),
        depth_histogram=depth_histogram(recs.depths),
        forced_depth=depth,
        mean_rationale_tokens=sum(recs.rationale_tokens) / len(recs.rationale_tokens),
    )
    return results


def depth_histogram(depths: Sequence[int]) -> dict[str, int]:
    """Requests per latent depth, keys as strings (JSON), in depth order."""
    return {str(depth): count for depth, count in sorted(Counter(depths).items())}


def item_popularity(data: RecData) -> Counter:
    """Interaction counts on training data only: each user's sequence minus its
    validation and test items, or, for pre-windowed data, the training targets."""
    if data.sequences is not None:
        return Counter(item for seq in data.sequences.values() for item in seq[:-2])
    return Counter(w.target for w in data.splits["train"])


def most_popular_baseline(
    data: RecData, windows: Sequence[Window], *, exclude_items: Sequence[Sequence[str]] | None = None
) -> dict:
    """Recommend the globally most popular items (minus each request's `exclude_items`)."""
    ranking = [item for item, _ in item_popularity(data).most_common()]
    top_k = max(DEFAULT_KS)
    ranked = []
    for index in range(len(windows)):
        seen = set(exclude_items[index]) if exclude_items is not None else set()
        ranked.append([item for item in ranking[: top_k + len(seen)] if item not in seen][:top_k])
    results = ranking_metrics(ranked, [w.target for w in windows])
    results.update(
        num_samples=len(windows),
        exclude_history=exclude_items is not None,
        mean_depth=0.0,
        depth_histogram=depth_histogram([0] * len(windows)),
    )
    return results


TABLE_COLUMNS = ("hr@1", "hr@5", "hr@10", "hr@20", "ndcg@5", "ndcg@10", "ndcg@20", "mean_depth")


def format_table(rows: dict[str, dict], title: str) -> str:
    """A plain-text results table, one row per variant."""
    width = max(len(name) for name in rows) + 2
    header = "variant".ljust(width) + "".join(c.rjust(11) for c in TABLE_COLUMNS) + "ms/request".rjust(12)
    lines = [title, header, "-" * len(header)]
    for name, result in rows.items():
        cells = "".join(f"{result.get(c, float('nan')):11.4f}" for c in TABLE_COLUMNS)
        latency = result.get("latency_ms_per_request")
        lines.append(name.ljust(width) + cells + (f"{latency:12.1f}" if latency is not None else "           -"))
    return "\n".join(lines)


def evaluation_requests(data: RecData, script_args: RecScriptArguments) -> tuple[list, list | None]:
    """The evaluated split's windows (the first `eval_max_samples`) and, with `exclude_history`,
    each request's seen items: one definition of the requests every variant is scored on."""
    windows = data.splits[script_args.eval_split][: script_args.eval_max_samples]
    if not windows:
        raise ValueError(f"{data.name} has no {script_args.eval_split} samples to evaluate")
    if not script_args.exclude_history:
        return windows, None
    return windows, [data.seen_items(script_args.eval_split, window) for window in windows]


def evaluate_and_report(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    sid_map: SidMap,
    data: RecData,
    script_args: RecScriptArguments,
    label: str,
    output_json: str | None = None,
    depth: int | None = None,
) -> dict:
    """Evaluate the model (at `depth` latent steps if given, else its own choice) and the
    most-popular baseline on the same requests; print and save."""
    windows, exclude_items = evaluation_requests(data, script_args)
    results = {
        label: evaluate_recommender(
            model,
            tokenizer,
            sid_map,
            windows,
            num_beams=script_args.eval_num_beams,
            batch_size=script_args.eval_batch_size,
            exclude_items=exclude_items,
            depth=depth,
        ),
        "most-popular": most_popular_baseline(data, windows, exclude_items=exclude_items),
    }
    title = (
        f"{data.name} {script_args.eval_split}: {len(windows)} requests, beams {script_args.eval_num_beams}, "
        f"exclude_history={script_args.exclude_history}"
    )
    print(format_table(results, title), flush=True)
    if output_json:
        payload = {**results[label], "variant": label, "dataset": data.name, "split": script_args.eval_split}
        payload["baselines"] = {"most-popular": results["most-popular"]}
        write_json_atomic(output_json, payload)
    return results
