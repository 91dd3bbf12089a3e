"""The steps every recipe shares: pick the SID map, evaluate and report."""

from __future__ import annotations

import logging
import os

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .configs import RecScriptArguments
from .data.schema import RecData
from .atomic import write_json_atomic
from .evaluation.evaluate import evaluate_recommender, format_table, most_popular_baseline
from .modeling.checkpoint import SID_MAP_FILE, check_same_sid_map
from .sid.build import build_sid_map
from .sid.sid_map import SidMap

logger = logging.getLogger(__name__)


def prepare_sid_map(script_args: RecScriptArguments, data: RecData, model_path: str, output_dir: str) -> SidMap:
    """The SID map to train with: `--sid_map`, else the starting checkpoint's, else the one an
    interrupted run left in `output_dir`, else a new one (saved there before training starts).

    A starting checkpoint that has its own map must agree with `--sid_map`:
    its SID token rows mean those items and no others.
    """
    checkpoint_file = os.path.join(model_path, SID_MAP_FILE)
    checkpoint_map = SidMap.load(checkpoint_file) if os.path.isfile(checkpoint_file) else None
    if script_args.sid_map:
        sid_map = SidMap.load(script_args.sid_map)
        if checkpoint_map is not None:
            check_same_sid_map(sid_map, checkpoint_map, model_path)
        return sid_map
    if checkpoint_map is not None:
        logger.info("Using the SID map of the starting checkpoint %s", model_path)
        return checkpoint_map
    previous_run_file = os.path.join(output_dir, SID_MAP_FILE)
    if os.path.isfile(previous_run_file):
        logger.info("Reusing %s from an earlier run of this output_dir", previous_run_file)
        return SidMap.load(previous_run_file)
    logger.info("No --sid_map given: building SIDs for %s with the defaults", data.name)
    sid_map = build_sid_map(data, use_shipped=script_args.use_shipped_sids)
    sid_map.save(output_dir)
    return sid_map


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
    windows = data.splits[script_args.eval_split][: script_args.eval_max_samples]
    if not windows:
        raise ValueError(f"{data.name} has no {script_args.eval_split} samples to evaluate")
    exclude_items = None
    if script_args.exclude_history:
        exclude_items = [data.seen_items(script_args.eval_split, w) for w in windows]
    results = {
        label: evaluate_recommender(
            model, tokenizer, sid_map, windows, num_beams=script_args.eval_num_beams,
            batch_size=script_args.eval_batch_size, exclude_items=exclude_items, depth=depth,
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
