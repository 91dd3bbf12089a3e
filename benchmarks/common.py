"""What every benchmark shares: the model it times and the record of where it ran."""

from __future__ import annotations

import itertools
import os
import platform
import shlex
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, TrainerCallback

from lasar_trl.data.schema import RecData
from lasar_trl.modeling.checkpoint import load_recommender
from lasar_trl.modeling.loading import resolve_model_path
from lasar_trl.sid import SidMap, build_sid_map
from lasar_trl.sid.tokenizer import add_sid_tokens

DTYPES = ["float32", "bfloat16", "float16"]  # what `load_model`'s dtype may name


def load_model(
    data: RecData, *, model: str, checkpoint: str | None, sid_map: str | None, device: str, dtype: str, seed: int = 0
):
    """(model in eval mode on `device`, tokenizer, sid_map): a lasar checkpoint, or a base
    model given SID tokens (SIDs built for `data` unless `sid_map` names a file)."""
    torch_dtype = getattr(torch, dtype)
    given_map = SidMap.load(sid_map) if sid_map else None
    if checkpoint:
        lm, tokenizer, the_map = load_recommender(checkpoint, given_map, dtype=torch_dtype, device=device)
    else:
        the_map = given_map or build_sid_map(data)
        path = resolve_model_path(model)
        tokenizer = AutoTokenizer.from_pretrained(path)
        lm = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
        add_sid_tokens(lm, tokenizer, the_map, seed=seed)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    # generate fills every unset field from model.generation_config: neutralise the checkpoint's own
    lm.generation_config = GenerationConfig(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    return lm.to(device).eval(), tokenizer, the_map


def cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    names = (
        [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")]
        if cpuinfo.is_file()
        else []
    )
    return names[0] if names else platform.processor()


def machine_info(device: str, dtype) -> dict:
    return {
        "processor": platform.processor(),
        "machine": platform.machine(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "load_average_at_end": os.getloadavg(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": device,
        "dtype": str(dtype),
        "device_name": torch.cuda.get_device_name() if device.startswith("cuda") else cpu_model(),
    }


def command_line() -> str:
    return shlex.join([os.path.basename(sys.executable), *sys.argv])


def time_interleaved(
    run: Callable[[str, object], object],
    variants: Sequence[str],
    batches: Sequence,
    repeats: int,
    device: str,
    batch_rows: Callable[[object], int] = lambda batch: len(batch["input_ids"]),
) -> tuple[dict[str, float], dict[str, list[float]], dict[str, list]]:
    """Time `run(variant, batch)` for every variant on every batch, `repeats` times, after one
    warm-up per variant; the order rotates so that no variant always runs first.

    Returns (median ms per request, every request's seconds, the first repeat's outputs), each
    by variant; a request's time is its batch's wall time over the batch size (`batch_rows`).
    """
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for variant in variants:  # warm-up at these shapes
        run(variant, batches[0])
    seconds = {v: [] for v in variants}
    outputs = {v: [] for v in variants}
    for repeat, (index, batch) in itertools.product(range(repeats), enumerate(batches)):
        shift = (repeat + index) % len(variants)
        for variant in [*variants[shift:], *variants[:shift]]:
            sync()
            start = time.perf_counter()
            output = run(variant, batch)
            sync()
            rows = batch_rows(batch)
            seconds[variant] += [(time.perf_counter() - start) / rows] * rows
            if repeat == 0:
                outputs[variant].append(output)
    return {v: 1000 * statistics.median(s) for v, s in seconds.items()}, seconds, outputs


class StepTimer(TrainerCallback):
    """Wall time of each step; CPU resident-memory peak sampled while timed steps run."""

    def __init__(self, warmup_steps: int, cuda: bool):
        self.warmup_steps, self.cuda = warmup_steps, cuda
        self.seconds: list[float] = []
        self.peak_rss = 0
        self._sampling = False

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _sample(self) -> None:
        while self._sampling:
            self.peak_rss = max(self.peak_rss, self._rss())
            time.sleep(0.005)

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.warmup_steps:
            if self.cuda:
                torch.cuda.reset_peak_memory_stats()
            else:
                self._sampling = True
                threading.Thread(target=self._sample, daemon=True).start()
        if self.cuda:
            torch.cuda.synchronize()
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self.cuda:
            torch.cuda.synchronize()
        if state.global_step > self.warmup_steps:
            self.seconds.append(time.perf_counter() - self._start)

    def peak_memory(self) -> int:
        self._sampling = False
        return torch.cuda.max_memory_allocated() if self.cuda else self.peak_rss
