"""LasarSFTConfig: `trl.SFTConfig` plus the Stage-2 options."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import SFTConfig

from ..losses import ALIGN_KINDS
from ..modeling.lasar import DEPTH_MODES, LATENT_PROJECTIONS, LasarConfig
from .lasar_common import LatentTrainingArguments


@dataclass
class LasarSFTConfig(SFTConfig, LatentTrainingArguments):
    """Stage 2, latent SFT: loss = CE(SID | P, h_0..h_N) + align_weight * L_align
    + depth_loss_weight * L_depth.

    Every field is also a command-line flag and a YAML key through `trl.TrlParser`.
    """

    n_max: int = field(default=8, metadata={"help": "Largest latent depth N_max (Policy Head classes end here)."})
    min_depth: int = field(default=1, metadata={"help": "Smallest latent depth (0 allowed: no reasoning)."})
    depth_mode: str = field(
        default="cot",
        metadata={
            "help": "`cot`: N = the sample's CoT segment count clipped to [min_depth, n_max]; `fixed`: N = "
            "fixed_depth for every sample (the fixed-depth baseline; the Policy Head is not trained).",
            "choices": list(DEPTH_MODES),
        },
    )
    fixed_depth: int | None = field(default=None, metadata={"help": "N for depth_mode=fixed."})
    align_weight: float = field(default=1.0, metadata={"help": "alpha: weight of the step-wise alignment loss."})
    align_kind: str = field(
        default="kl",
        metadata={"help": "Symmetric KL (the paper), or cosine / MSE ablations.", "choices": list(ALIGN_KINDS)},
    )
    depth_loss_weight: float = field(default=0.1, metadata={"help": "beta_depth: weight of the Policy Head's CE."})
    latent_projection: str = field(
        default="none",
        metadata={
            "help": "How h_t becomes the next slot's input: `none` (the paper), `linear` (learned, identity init), "
            "`rescale` (to the token embeddings' mean norm).",
            "choices": list(LATENT_PROJECTIONS),
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        self.lasar_config(hidden_size=1)  # validates the depth and projection fields
        self.check_latent_fields()
        if self.depth_mode == "cot" and self.fixed_depth is not None:
            raise ValueError("fixed_depth is only used with depth_mode=fixed")
        if self.align_weight < 0 or self.depth_loss_weight < 0:
            raise ValueError("align_weight and depth_loss_weight must be >= 0")
        # SFT options the latent layout cannot honour: refuse them rather than ignore them
        if self.packing or self.padding_free:
            raise ValueError("packing / padding_free: latent SFT needs one prompt per row (the loop starts at <bot>)")
        if self.completion_only_loss is False:
            raise ValueError("completion_only_loss=False: latent SFT trains on the SID completion only")
        if self.truncation_mode != "keep_start":
            raise ValueError("truncation_mode must be keep_start: cutting the prompt's start changes what anchors saw")
        if self.loss_type != "nll":
            raise ValueError(f"loss_type={self.loss_type!r}: latent SFT's SID loss is cross-entropy (nll)")

    def lasar_config(self, hidden_size: int) -> LasarConfig:
        """The LASAR parts this run trains (saved as lasar_config.json)."""
        return LasarConfig(
            hidden_size=hidden_size,
            n_max=self.n_max,
            min_depth=self.min_depth,
            depth_mode=self.depth_mode,
            fixed_depth=self.fixed_depth,
            latent_projection=self.latent_projection,
        )

    @property
    def needs_anchors(self) -> bool:
        """CoT anchors give the alignment targets and, with depth_mode=cot, the depths."""
        return self.align_weight > 0 or self.depth_mode == "cot"
