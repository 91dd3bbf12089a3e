"""LasarGRPOConfig: `trl.GRPOConfig` plus the Stage-3 options."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import GRPOConfig

from .lasar_common import LatentTrainingArguments

ROLLOUT_DEPTHS = ("sample", "argmax", "fixed")
ROLLOUT_DECODINGS = ("sample", "beam", "beam_group")
DEPTH_BASELINES = ("ema", "group_mean")


@dataclass
class LasarGRPOConfig(GRPOConfig, LatentTrainingArguments):
    """Stage 3, RL: TRL's GRPO loss on the SID tokens, with log-probs taken through each
    rollout's own latent trajectory, + terminal_align_weight * KL(h_N, a_S) + the Policy
    Head's REINFORCE loss -(R - b - depth_cost * N) log pi(N | h_0) - depth_entropy_coef * H(pi).

    `temperature` is the SID sampling temperature (0 = greedy, then the GRPO log-probs are
    taken at temperature 1). Rollouts are decoded under the SID trie by the trainer itself:
    vLLM, tools and the generation options that do not apply to a trie are refused.
    """

    rollout_depth: str = field(
        default="sample",
        metadata={
            "help": "`sample`: each rollout draws its own N_i from the Policy Head (and the head learns by "
            "REINFORCE); `argmax`: the head's most likely depth; `fixed`: fixed_depth for every rollout (0 = GRPO "
            "without reasoning, the MiniOneRec recipe). Under rollout_decoding=beam_group, one N per group.",
            "choices": list(ROLLOUT_DEPTHS),
        },
    )
    fixed_depth: int | None = field(default=None, metadata={"help": "N for rollout_depth=fixed (0 allowed)."})
    rollout_decoding: str = field(
        default="sample",
        metadata={
            "help": "`sample`: temperature sampling under the SID trie; `beam`: each rollout's top beam of a "
            "constrained beam search at its own depth (rollouts of one prompt then differ only by depth); "
            "`beam_group` (MiniOneRec's rollouts): the group is the top num_generations beams of one constrained "
            "beam search per prompt, G distinct items at one depth drawn once per group.",
            "choices": list(ROLLOUT_DECODINGS),
        },
    )
    rollout_num_beams: int = field(
        default=10,
        metadata={
            "help": "Beams for rollout_decoding=beam, and for beam_group, whose group is the top num_generations "
            "of them (so at least num_generations and num_generations_eval)."
        },
    )
    terminal_align_weight: float = field(
        default=0.1, metadata={"help": "Weight of the symmetric KL between h_{N_i} and the sample's last CoT anchor."}
    )
    depth_cost: float = field(
        default=0.02, metadata={"help": "lambda: cost of one latent step, in reward units (exact match = 1)."}
    )
    depth_entropy_coef: float = field(default=0.01, metadata={"help": "eta: entropy bonus of the Policy Head."})
    depth_baseline: str = field(
        default="ema",
        metadata={
            "help": "REINFORCE baseline b: `ema` of the mean reward, or the rollout's `group_mean` reward (not with "
            "rollout_decoding=beam_group, whose groups share one depth).",
            "choices": list(DEPTH_BASELINES),
        },
    )
    depth_baseline_decay: float = field(default=0.9, metadata={"help": "Decay of the EMA baseline."})

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_latent_fields()
        if (self.rollout_depth == "fixed") != (self.fixed_depth is not None):
            raise ValueError("fixed_depth is given exactly when rollout_depth=fixed")
        if self.fixed_depth is not None and self.fixed_depth < 0:
            raise ValueError(f"fixed_depth must be >= 0, got {self.fixed_depth}")
        if self.rollout_num_beams < 1:
            raise ValueError(f"rollout_num_beams must be >= 1, got {self.rollout_num_beams}")
        if self.rollout_decoding == "beam_group":
            self._check_beam_groups()
        if not 0 <= self.depth_baseline_decay < 1:
            raise ValueError(f"depth_baseline_decay must be in [0, 1), got {self.depth_baseline_decay}")
        if min(self.terminal_align_weight, self.depth_cost, self.depth_entropy_coef) < 0:
            raise ValueError("terminal_align_weight, depth_cost and depth_entropy_coef must be >= 0")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        # Rollouts are decoded by the trainer under the SID trie: refuse what it would ignore
        if self.use_vllm or self.use_transformers_continuous_batching:
            raise ValueError("use_vllm / continuous batching: LASAR rollouts run the latent loop and the SID trie")
        ignored = {
            "top_p": self.top_p != 1.0,
            "top_k": self.top_k not in (0, None),
            "min_p": self.min_p is not None,
            "repetition_penalty": self.repetition_penalty != 1.0,
            "generation_kwargs": bool(self.generation_kwargs),
        }
        if any(ignored.values()):
            names = [name for name, is_set in ignored.items() if is_set]
            raise ValueError(f"{names}: SID rollouts sample from the trie-masked softmax at `temperature` only")

    def _check_beam_groups(self) -> None:
        """beam_group rollouts are the top G beams of one search per prompt at one depth per group:
        the search needs G beams, a process must hold whole groups (a group split over processes would
        repeat its top beams and draw its depth twice), and a group-mean baseline would cancel the
        depth loss."""
        group_size = max(self.num_generations, self.num_generations_eval or 0)
        if self.rollout_num_beams < group_size:
            raise ValueError(
                f"rollout_decoding=beam_group takes num_generations (and num_generations_eval) beams per prompt: "
                f"rollout_num_beams={self.rollout_num_beams} must be >= {group_size}"
            )
        process_batch = self.per_device_train_batch_size * self.steps_per_generation
        if process_batch % self.num_generations:
            raise ValueError(
                f"rollout_decoding=beam_group needs whole groups on each process: per_device_train_batch_size * "
                f"steps_per_generation ({process_batch}) must be divisible by num_generations ({self.num_generations})"
            )
        eval_group_size = self.num_generations_eval or self.num_generations
        if self.eval_strategy != "no" and self.per_device_eval_batch_size % eval_group_size:
            raise ValueError(
                f"rollout_decoding=beam_group needs whole groups on each process: per_device_eval_batch_size "
                f"({self.per_device_eval_batch_size}) must be divisible by num_generations_eval or num_generations "
                f"({eval_group_size})"
            )
        if self.rollout_depth == "sample" and self.depth_baseline == "group_mean":
            raise ValueError(
                "depth_baseline=group_mean with rollout_decoding=beam_group: the rows of a group share one depth, so "
                "R - group mean sums to 0 over the group and only depth_cost would move the Policy Head; use "
                "depth_baseline=ema"
            )
