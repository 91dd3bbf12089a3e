"""What every lasar-trl trainer adds to TRL's: recommender checkpoints.

A recommender checkpoint is the HF model + tokenizer, the SID map it was trained with, its model
card (README.md), and, for LASAR models, the Policy Head and latent projection beside the HF weights.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, TrainingArguments
from transformers.trainer_utils import rotate_checkpoints
from trl import SFTTrainer

from ..atomic import atomic_entries, move_into_place
from ..configs import check_learning_rates
from ..modeling.checkpoint import MAX_HISTORY_KEY, SID_MAP_FILE
from ..modeling.forward import add_latent_forward
from ..modeling.lasar import get_lasar, has_lasar, load_lasar, save_lasar, split_lasar_state
from ..modeling.loading import resolve_model_path
from ..modeling.model_card import CARD_TAGS, MODEL_CARD_FILE, CardFacts, render_model_card
from ..sid.sid_map import SidMap
from ..sid.tokenizer import BOT_TOKEN
from ..tasks import prompt_template_of

STAGING_DIR = ".staging"


class RecommenderCheckpointMixin:
    """Mix into a `transformers.Trainer` subclass (before it): saves the SID map, the LASAR
    parts and the model card with every model it writes, loads them back on resume and
    best-model reload, and writes checkpoints atomically.

    A checkpoint is written into `output_dir/.staging/checkpoint-N` and renamed
    to `output_dir/checkpoint-N` only once complete, so a crash mid-save never
    leaves a half-written `checkpoint-N` for `--resume_from_checkpoint` to pick.

    `stage` and `dataset_name` are what the model card says produced the checkpoint and what it
    was trained on (default: the trainer's class, and the dataset the SID map records).
    """

    def __init__(
        self, *args, sid_map: SidMap | None = None, stage: str | None = None, dataset_name: str | None = None, **kwargs
    ):
        training_args = kwargs.get("args") or next((a for a in args if isinstance(a, TrainingArguments)), None)
        if training_args is not None:  # TRL's own SFTConfig has no check of ours: refuse before the model loads
            check_learning_rates(vars(training_args))
        # A model given by name may be the embedded default, which TRL would hand to the hub client
        if args and isinstance(args[0], str):
            args = (resolve_model_path(args[0]), *args[1:])
        elif isinstance(kwargs.get("model"), str):
            kwargs["model"] = resolve_model_path(kwargs["model"])
        if kwargs.get("peft_config") is not None:
            model = args[0] if args else kwargs["model"]
            kwargs["peft_config"] = self._with_trainable_sid_rows(
                kwargs["peft_config"], model, sid_map, kwargs.get("processing_class")
            )
        super().__init__(*args, **kwargs)
        self.sid_map = sid_map or self._starting_checkpoint_sid_map()
        self.hf_model.add_model_tags(list(CARD_TAGS))  # kept by PEFT's card update too, as TRL's own tags are
        self.stage = stage or type(self).__name__
        self.dataset_name = dataset_name or self.sid_map.stats.get("dataset")

    @staticmethod
    def _with_trainable_sid_rows(peft_config, model, sid_map: SidMap | None, tokenizer):
        """LoRA trains no embedding row: the SID tokens (and `<bot>`), new or barely trained,
        would keep their rows and the model would generate stale or invalid items. Their rows
        train as PEFT trainable tokens, in the input embedding and, when it is not tied to it,
        the LM head too (a tied head follows by itself), unless the config already trains the
        embeddings itself."""
        wants_rows = getattr(peft_config, "trainable_token_indices", None)
        saves_embeddings = any("embed" in name for name in getattr(peft_config, "modules_to_save", None) or [])
        if not hasattr(peft_config, "trainable_token_indices") or wants_rows or saves_embeddings:
            return peft_config
        path = model if isinstance(model, str) else model.config._name_or_path
        sid_map = sid_map or SidMap.load(os.path.join(path, SID_MAP_FILE))
        tokenizer = tokenizer or AutoTokenizer.from_pretrained(path)
        token_ids = tokenizer.convert_tokens_to_ids([*sid_map.all_tokens(), BOT_TOKEN])
        if isinstance(model, str):  # the trainer loads it: its module names from an empty copy
            with torch.device("meta"):
                model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model))
        input_embeddings, output_embeddings = model.get_input_embeddings(), model.get_output_embeddings()
        if output_embeddings is None or output_embeddings.weight is input_embeddings.weight:
            return dataclasses.replace(peft_config, trainable_token_indices=token_ids)
        names = {id(module): name for name, module in model.named_modules()}
        rows = {names[id(module)]: token_ids for module in (input_embeddings, output_embeddings)}
        return dataclasses.replace(peft_config, trainable_token_indices=rows)

    def _starting_checkpoint_sid_map(self) -> SidMap:
        """Without `sid_map=`, the map of the checkpoint folder training starts from, so that
        an `SFTTrainer` script works unchanged on a recommender checkpoint."""
        path = self.accelerator.unwrap_model(self.model).config._name_or_path
        if not os.path.isfile(os.path.join(path, SID_MAP_FILE)):
            raise ValueError(
                f"{type(self).__name__} needs the SID map its checkpoints are saved with: pass sid_map=..., or "
                f"start from a recommender checkpoint folder with a {SID_MAP_FILE} ({path!r} has none)"
            )
        return SidMap.load(os.path.join(path, SID_MAP_FILE))

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        """Save into a staging folder, then move each file into place (each file
        appears whole or not at all); the SID map comes last.

        LASAR parts attached to the model are kept out of the HF weights and saved
        beside them (`lasar_head.safetensors`, `lasar_config.json`)."""
        if not self.args.should_save and not self.is_distributed_loading_by_transformers:
            return
        output_dir = output_dir or self.args.output_dir
        with atomic_entries(output_dir) as staging:
            lasar = get_lasar(self.model)
            if lasar is not None:
                if state_dict is None:
                    state_dict = self.model.state_dict()
                state_dict, lasar_state = split_lasar_state(state_dict)
                if self.args.should_save:
                    save_lasar(lasar_state, lasar.config, str(staging))
            super()._save(str(staging), state_dict)
            self._write_model_card(staging)
        self.sid_map.save(output_dir)

    def create_model_card(
        self,
        model_name: str | None = None,
        dataset_name: str | None = None,
        tags: str | list[str] | None = None,
        metrics: Mapping[str, Any] | None = None,
    ) -> None:
        """TRL's model card with the recommender's sections (`render_model_card`), written
        atomically into `output_dir`; `metrics`: the run's eval_results.json, when it evaluated."""
        if self.is_world_process_zero():
            with atomic_entries(self.args.output_dir) as staging:
                self._write_model_card(staging, model_name, dataset_name, tags, metrics)

    def _write_model_card(self, folder: Path, model_name=None, dataset_name=None, tags=None, metrics=None) -> None:
        """Write the card into `folder` (a staging folder, whose entries move into place whole).
        TRL's `create_model_card` writes into `args.output_dir`: it is pointed at `folder` meanwhile.
        A PEFT model's save wrote PEFT's card there first; TRL's replaces it and PEFT's metadata
        (library, base model, version) is added back, as a TRL run's final save does."""
        if not (self.args.should_save and self.is_world_process_zero()):
            return
        output_dir = self.args.output_dir
        tags = [tags] if isinstance(tags, str) else list(tags or [])
        self.args.output_dir = str(folder)
        try:
            super().create_model_card(  # a dataset TRL links to on the hub only when the caller names one
                model_name=model_name or Path(output_dir).name, dataset_name=dataset_name, tags=[*tags, *CARD_TAGS]
            )
        finally:
            self.args.output_dir = output_dir
        model = self.accelerator.unwrap_model(self.model)
        if hasattr(model, "create_or_update_model_card"):  # a PEFT model
            model.create_or_update_model_card(str(folder))
        config = self.hf_model.config
        facts = CardFacts(
            model_id=self.hub_model_id or output_dir,
            stage=self.stage,
            started_from=config._name_or_path or None,
            dataset=dataset_name or self.dataset_name,
            prompt_template=prompt_template_of(self.hf_model),
            max_history=getattr(config, MAX_HISTORY_KEY, None),
            sid_stats=self.sid_map.stats,
            metrics=metrics,
        )
        card = Path(folder) / MODEL_CARD_FILE
        card.write_text(render_model_card(card.read_text(encoding="utf-8"), facts), encoding="utf-8")

    def _save_checkpoint(self, model, trial) -> None:
        run_dir = self._get_output_dir(trial=trial)
        staging_root = os.path.join(run_dir, STAGING_DIR)
        self._get_output_dir = lambda trial=None: staging_root  # super() writes into staging
        try:
            super()._save_checkpoint(model, trial)
        finally:
            del self._get_output_dir
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            name = f"checkpoint-{self.state.global_step}"
            # replaces a checkpoint of the same step (re-saved after a resume)
            move_into_place(os.path.join(staging_root, name), os.path.join(run_dir, name))
            shutil.rmtree(staging_root, ignore_errors=True)
            if self.state.best_model_checkpoint and self.state.best_model_checkpoint.startswith(staging_root):
                self.state.best_model_checkpoint = self.state.best_model_checkpoint.replace(staging_root, run_dir)
            rotate_checkpoints(
                output_dir=run_dir,
                save_total_limit=self.args.save_total_limit,
                best_model_checkpoint=self.state.best_model_checkpoint,
            )
        self.accelerator.wait_for_everyone()

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        self._load_lasar(resume_from_checkpoint)

    def _load_best_model(self) -> None:
        super()._load_best_model()
        self._load_lasar(self.state.best_model_checkpoint)

    @property
    def hf_model(self) -> PreTrainedModel:
        """The Hugging Face causal LM under any DDP/DeepSpeed/PEFT wrappers."""
        model = self.accelerator.unwrap_model(self.model)
        return model.get_base_model() if hasattr(model, "get_base_model") else model

    def _load_lasar(self, checkpoint: str) -> None:
        """The LASAR parts are not in the HF weights that Trainer reloads: load them too."""
        if has_lasar(checkpoint):
            load_lasar(self.hf_model, checkpoint)


class SidSFTTrainer(RecommenderCheckpointMixin, SFTTrainer):
    """Stage 1: `trl.SFTTrainer` writing recommender checkpoints (see the mixin), with the LM
    head run only on the positions that carry a loss."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        add_latent_forward(self.hf_model)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """TRL's loss (the mean log-likelihood of the labelled tokens, over `num_items_in_batch`
        when accumulating) and its `entropy` / `mean_token_accuracy` metrics, from the logits of
        the labelled positions only (`labelled_forward`). Batches without an attention mask
        (padding-free) and callers that want the full logits take TRL's path."""
        if return_outputs or "attention_mask" not in inputs or "labels" not in inputs:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        mode = "train" if self.model.training else "eval"
        output = model(labelled={key: inputs[key] for key in ("input_ids", "attention_mask", "labels")})
        log_probs = torch.log_softmax(output.logits, dim=-1)
        token_log_probs = log_probs.gather(-1, output.labels.unsqueeze(-1)).squeeze(-1)
        count = len(token_log_probs) if num_items_in_batch is None else num_items_in_batch
        loss = -token_log_probs.sum() / torch.as_tensor(count).clamp(min=1)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes  # DDP averages gradients over processes: as TRL does
        with torch.no_grad():
            gather = self.accelerator.gather_for_metrics
            valid = gather(torch.tensor(len(token_log_probs), device=loss.device)).sum().clamp(min=1)
            entropy = gather(-(log_probs.exp() * log_probs).sum(-1).sum()).sum()
            correct = gather((log_probs.argmax(-1) == output.labels).sum()).sum()
        self._metrics[mode]["entropy"].append((entropy / valid).item())
        self._metrics[mode]["mean_token_accuracy"].append((correct / valid).item())
        return loss
