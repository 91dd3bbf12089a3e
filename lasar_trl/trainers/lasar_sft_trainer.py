"""Stage 2: latent SFT.

`LasarSFTTrainer` is `trl.SFTTrainer` with its own collator and `compute_loss`: the
prompt `P <bot>` runs through the latent loop for N steps (the CoT segment count, or a
fixed depth), the SID is decoded from h_N, each latent state h_t is pulled towards its
CoT anchor a_{m(t)}, and the Policy Head learns N from h_0. Dataset preparation,
optimisation, checkpointing and logging are SFTTrainer's.

Dataset: prompt/completion rows as for SFTTrainer (prompt ending in `<bot>`, completion
the SID) plus an `anchors` column: per row, S lists of H floats (see
`lasar_trl.cot.anchors`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import pyarrow.compute as pc
import torch
import torch.nn.functional as F
from transformers.modeling_outputs import CausalLMOutputWithPast
from trl.trainer.utils import pad

from ..losses import alignment_loss, depth_loss, step_to_anchor
from ..modeling.forward import LatentOutput, add_latent_forward
from ..modeling.lasar import attach_lasar
from ..sid.tokenizer import BOT_TOKEN
from .lasar_common import ANCHORS_COLUMN, LatentTrainerMixin
from .lasar_sft_config import LasarSFTConfig
from .sft import SidSFTTrainer


@dataclass
class LatentSFTCollator:
    """Tokenized SFT rows (input_ids, labels = -100 on the prompt, anchors) -> left-padded
    prompts, right-padded completions, zero-padded anchors and segment counts."""

    pad_token_id: int
    bot_token_id: int

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        prompts, completions = [], []
        for index, example in enumerate(examples):
            labels = example["labels"]
            prompt_length = next((i for i, label in enumerate(labels) if label != -100), len(labels))
            prompt, completion = example["input_ids"][:prompt_length], example["input_ids"][prompt_length:]
            if not prompt or prompt[-1] != self.bot_token_id or not completion:
                raise ValueError(
                    f"row {index} of the batch: a latent SFT row is a prompt ending in {BOT_TOKEN} followed by a "
                    "completion (the SID); check the prompt template and that max_length does not truncate it"
                )
            prompts.append(torch.tensor(prompt))
            completions.append(torch.tensor(completion))
        batch = {
            "prompt_ids": pad(prompts, self.pad_token_id, padding_side="left"),
            "prompt_mask": pad([torch.ones_like(p) for p in prompts], padding_side="left"),
            "completion_ids": pad(completions, self.pad_token_id),
            "labels": pad(completions, -100),
        }
        if ANCHORS_COLUMN in examples[0]:
            anchors = [torch.tensor(example[ANCHORS_COLUMN], dtype=torch.float32) for example in examples]
            batch["num_segments"] = torch.tensor([len(a) for a in anchors])
            batch["anchors"] = pad(anchors)  # (B, S_max, H)
        return batch


def check_anchor_column(dataset, hidden_size: int, name: str, needed_for: str) -> None:
    """Every row needs >= 1 anchor of width `hidden_size`: checked over the whole column
    (Arrow, no Python loop over rows) so a bad file fails before training starts."""
    if ANCHORS_COLUMN not in dataset.column_names:
        raise ValueError(
            f"the {name} dataset has no {ANCHORS_COLUMN!r} column (CoT anchors from the Stage-1 model, see "
            f"lasar_trl.cot.anchors); it is needed for {needed_for}. Columns: {dataset.column_names}"
        )
    column = dataset.data.column(ANCHORS_COLUMN).combine_chunks()
    segments = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    if (empty := (segments == 0).nonzero()[0]).size:
        raise ValueError(f"{name} dataset row {int(empty[0])} has no anchors (an empty CoT?)")
    widths = pc.list_value_length(pc.list_flatten(column)).to_numpy(zero_copy_only=False)
    if (wrong := (widths != hidden_size).nonzero()[0]).size:
        row = int(segments.cumsum().searchsorted(wrong[0], side="right"))
        raise ValueError(
            f"{name} dataset row {row}: anchors have width {int(widths[wrong[0]])} but the model's hidden size is "
            f"{hidden_size}; they were made by another model"
        )


class LasarSFTTrainer(LatentTrainerMixin, SidSFTTrainer):
    """Stage-2 trainer: a drop-in for `SFTTrainer` (pass `LasarSFTConfig` and a dataset
    with anchors). The Policy Head (and latent projection) are attached to the model if
    it has none, and saved with it (`lasar_head.safetensors`, `lasar_config.json`)."""

    args: LasarSFTConfig
    loss_is_scaled_for_ga = False  # compute_loss returns a per-batch mean: Trainer divides it for accumulation

    def __init__(self, model, args: LasarSFTConfig, *pargs, data_collator=None, **kwargs):
        if not isinstance(args, LasarSFTConfig):
            raise TypeError(f"LasarSFTTrainer needs a LasarSFTConfig, got {type(args).__name__}")
        super().__init__(model, args, *pargs, data_collator=data_collator, **kwargs)
        if data_collator is None:  # replaces SFTTrainer's default, now that the tokenizer is resolved
            self.data_collator = LatentSFTCollator(
                self.processing_class.pad_token_id, self.processing_class.convert_tokens_to_ids(BOT_TOKEN)
            )
        base = self.hf_model
        hidden_size = base.config.hidden_size
        wanted = args.lasar_config(hidden_size)
        lasar = self._starting_lasar()
        if lasar is None:
            lasar = attach_lasar(base, wanted)
        else:
            built = (lasar.config.n_max, lasar.config.min_depth, lasar.config.latent_projection)
            if built != (wanted.n_max, wanted.min_depth, wanted.latent_projection):
                raise ValueError(
                    f"the model's LASAR parts have (n_max, min_depth, latent_projection) = {built}, the config "
                    f"asks for {(wanted.n_max, wanted.min_depth, wanted.latent_projection)}"
                )
            # this run's depth mode is what the saved lasar_config.json must record
            lasar.config = replace(lasar.config, depth_mode=wanted.depth_mode, fixed_depth=wanted.fixed_depth)
        add_latent_forward(base)
        lasar.requires_grad_(True)  # PEFT freezes every non-adapter module; these must train
        if args.depth_mode == "fixed":  # nothing reads the head (and at depth 0 the projection): DDP needs them frozen
            lasar.policy_head.requires_grad_(False)
            if args.fixed_depth == 0 and lasar.latent_projection is not None:
                lasar.latent_projection.requires_grad_(False)
        if args.needs_anchors:
            for name, dataset in [("train", self.train_dataset), *named_eval_datasets(self.eval_dataset)]:
                check_anchor_column(dataset, hidden_size, name, "alignment and for depth_mode=cot")

    @property
    def head_learns(self) -> bool:
        return self.args.depth_mode == "cot"

    def _depths(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.args.depth_mode == "fixed":
            return torch.full_like(inputs["prompt_ids"][:, 0], self.args.fixed_depth)
        return inputs["num_segments"].clamp(self.args.min_depth, self.args.n_max)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if self.model.training else "eval"
        args = self.args
        depths = self._depths(inputs)
        # through `model` (DDP / autocast / PEFT wrappers), routed to the latent loop: see modeling.forward
        output = model(
            latent=dict(
                prompt_ids=inputs["prompt_ids"],
                prompt_mask=inputs["prompt_mask"],
                num_steps=depths,
                sid_input_ids=inputs["completion_ids"][:, :-1],
                max_steps=self._max_steps(depths),
                depth_logits=args.depth_mode == "cot",
                detach_head_input=not args.depth_loss_to_backbone,
            )
        )
        logits = output.logits  # (B, C, V): position i predicts completion token i
        ce = F.cross_entropy(logits.flatten(0, 1).float(), inputs["labels"].flatten(), ignore_index=-100)
        loss = ce
        metrics = {"ce": ce.item(), "mean_depth": depths.float().mean().item()}

        if args.align_weight > 0 and output.latent_states.shape[1] > 0:
            align = self._alignment(output, depths, inputs)
            loss = loss + args.align_weight * align
            metrics[f"align_{args.align_kind}"] = align.item()
        if args.depth_mode == "cot":
            depth_ce = depth_loss(output.depth_logits, depths, args.min_depth)
            loss = loss + args.depth_loss_weight * depth_ce
            predicted = output.depth_logits.argmax(-1) + args.min_depth
            metrics.update(depth_ce=depth_ce.item(), depth_accuracy=(predicted == depths).float().mean().item())
        if output.step_mask.any():
            metrics["latent_norm_ratio"] = self._latent_norm_ratio(output, inputs["prompt_ids"], inputs["prompt_mask"])

        for key, value in metrics.items():
            self._metrics[mode][key].append(value)
        return (loss, CausalLMOutputWithPast(loss=loss, logits=logits)) if return_outputs else loss

    def _alignment(self, output: LatentOutput, depths: torch.Tensor, inputs) -> torch.Tensor:
        """L_align between h_t and a_{m(t)} over each row's real steps."""
        steps = output.latent_states.shape[1]
        anchor_index = step_to_anchor(depths, inputs["num_segments"], steps)  # (B, T), -1 past N
        anchors = inputs["anchors"]
        gather = anchor_index.clamp(min=0).unsqueeze(-1).expand(-1, -1, anchors.shape[-1])
        latent, targets = self._in_align_space(output.latent_states, anchors.gather(1, gather))  # (B, T, H or V)
        return alignment_loss(latent, targets, output.step_mask, self.args.align_kind, self.args.align_temperature)


def named_eval_datasets(eval_dataset) -> list[tuple[str, object]]:
    if eval_dataset is None:
        return []
    if isinstance(eval_dataset, dict):
        return [(f"eval {key}", value) for key, value in eval_dataset.items()]
    return [("eval", eval_dataset)]
