"""What the Stage-2 and Stage-3 trainers share: the LASAR fields of their configs, and the
parts of training that touch the Policy Head and the latent states."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
from transformers import PreTrainedModel

from ..configs import check_choices, check_learning_rates
from ..modeling.forward import LatentOutput
from ..modeling.lasar import LasarModules, get_lasar, has_lasar, load_lasar

ALIGN_SPACES = ("hidden", "vocab")
ANCHORS_COLUMN = "anchors"
logger = logging.getLogger(__name__)


@dataclass
class LatentTrainingArguments:
    """Fields of both LASAR configs (mixed into `LasarSFTConfig` and `LasarGRPOConfig`)."""

    align_space: str = field(
        default="hidden",
        metadata={
            "help": "`hidden`: softmax over the hidden dimension (the paper); `vocab`: over LM-head logits.",
            "choices": list(ALIGN_SPACES),
        },
    )
    align_temperature: float = field(default=1.0, metadata={"help": "tau of the alignment softmax."})
    policy_head_learning_rate: float | None = field(
        default=None,
        metadata={
            "help": "Learning rate of the Policy Head (default: learning_rate). With Adam the weight of the head's "
            "loss does not change how fast the head itself learns; this does."
        },
    )
    depth_loss_to_backbone: bool = field(
        default=False,
        metadata={"help": "Let the Policy Head's loss reach the backbone through h_0 (default: only the head learns)."},
    )

    def check_latent_fields(self) -> None:
        check_choices(self)
        check_learning_rates(vars(self))
        if self.align_temperature <= 0:
            raise ValueError(f"align_temperature must be > 0, got {self.align_temperature}")


class LatentTrainerMixin:
    """Mix into a LASAR trainer (before the TRL trainer it extends); `head_learns` says
    whether this run trains the Policy Head."""

    args: LatentTrainingArguments
    head_learns: bool = False
    _checked_align_targets = False

    @property
    def lasar(self) -> LasarModules | None:
        return get_lasar(self.hf_model)

    def _starting_lasar(self) -> LasarModules | None:
        """The model's LASAR parts; when none are attached, those saved in the checkpoint
        folder training starts from (None for a plain model)."""
        base = self.hf_model
        lasar = get_lasar(base)
        if lasar is None and has_lasar(base.config._name_or_path):
            lasar = load_lasar(base, base.config._name_or_path)
        return lasar

    def _set_signature_columns_if_needed(self) -> None:
        """TRL keeps only the dataset columns its model signature names, and drops the rest
        before the collator and the rollouts see a row: the CoT anchors are kept too."""
        super()._set_signature_columns_if_needed()
        if ANCHORS_COLUMN not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, ANCHORS_COLUMN]

    def create_optimizer(self, model=None):
        """TRL's optimizer, with the Policy Head in its own group when it has its own rate."""
        if self.optimizer is not None:  # given by the user, or built already
            return self.optimizer
        optimizer = super().create_optimizer(model)
        if self.args.policy_head_learning_rate is not None and self.head_learns:
            head = list(self.lasar.policy_head.parameters())
            head_ids = {id(p) for p in head}
            for group in optimizer.param_groups:
                group["params"] = [p for p in group["params"] if id(p) not in head_ids]
            optimizer.add_param_group({"params": head, "lr": self.args.policy_head_learning_rate, "weight_decay": 0.0})
        return optimizer

    def _max_steps(self, depths: torch.Tensor) -> int | None:
        """With several processes, every rank runs the largest depth of any rank (padded),
        so all ranks make the same forward calls (ZeRO-3 hangs otherwise)."""
        if self.accelerator.num_processes == 1:
            return None
        return int(self.accelerator.gather(depths.max().reshape(1)).max())

    def _in_align_space(self, latent: torch.Tensor, anchors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Latent states and their anchor targets in the space the alignment softmax is taken
        over: hidden as they are, or vocab through the LM head (no gradient on the anchor side)."""
        anchors = anchors.to(latent.dtype)
        if self.args.align_space == "vocab":
            lm_head = self.hf_model.get_output_embeddings()
            with torch.no_grad():
                anchors = lm_head(anchors)
            return lm_head(latent), anchors
        if not self._checked_align_targets:
            self._warn_if_one_hot(anchors)
        return latent, anchors

    def _warn_if_one_hot(self, targets: torch.Tensor) -> None:
        """Backbones with massive activations (a few hidden dimensions far above the rest,
        e.g. SmolLM2) make softmax over the hidden dimension one-hot, and the KL then has
        nothing to align: say so once, with the ways out."""
        self._checked_align_targets = True
        peak = torch.softmax(targets.float() / self.args.align_temperature, dim=-1).max(-1).values.mean().item()
        if peak > 0.99:
            logger.warning(
                "align_space=hidden: softmax(anchor / %.3g) puts %.4f of its mass on one hidden dimension, so the "
                "alignment KL is ~0 and aligns nothing on this backbone. Use align_space=vocab or a larger "
                "align_temperature.",
                self.args.align_temperature,
                peak,
            )

    def _latent_norm_ratio(self, output: LatentOutput, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> float:
        """Mean norm of the real latent states over that of the prompt's token embeddings:
        latent reasoning is known to fail when it grows large."""
        base: PreTrainedModel = self.hf_model
        with torch.no_grad():
            latent_norm = output.latent_states.norm(dim=-1)[output.step_mask].mean()
            embed_norm = base.get_input_embeddings()(prompt_ids[prompt_mask.bool()]).norm(dim=-1).mean()
            return (latent_norm / embed_norm).item()
