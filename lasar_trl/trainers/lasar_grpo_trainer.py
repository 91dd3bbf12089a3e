"""Stage 3: GRPO with adaptive latent depth.

`LasarGRPOTrainer` is `trl.GRPOTrainer` with its own rollouts and log-probs, and two
extra loss terms; batching, advantages, loss types, clipping, the reference model,
checkpointing and logging are TRL's. Per prompt, G rollouts each draw a depth N_i
(Policy Head sample, argmax or fixed), run N_i latent steps and decode one SID under
the trie (`rollout_decoding=sample` or `beam`).

Rollouts prefill each prompt once per group: TRL repeats a prompt G times in a row, so
runs of identical prompts (not assumed to be whole groups: a process's slice may start
mid-group) are prefilled once and their KV cache repeated per row before the depths are
drawn; each row then draws its own N_i and runs its own latent steps, so the rollouts are
those of prefilling every row.

`rollout_decoding=beam_group` is MiniOneRec's rollout: one depth per group (drawn once from
the prompt's h_0) and one constrained beam search per prompt, whose top G beams are the
group: G distinct items, each with its own SID log-prob for the ranking reward.

How per-rollout state travels through TRL's step:

1. `_generate_single_turn` decodes the rollouts; TRL's `_generate` keeps only the completion
   ids it returns, so depths, SID log-probs and validity wait in `self._rollouts`;
2. `_generate` logs the depth histogram and invalid rate, and puts `depth`, `sid_logprob` and
   `num_generations` in TRL's extra fields, which TRL writes into the rows: the reward
   functions get them as columns;
3. `_generate_and_score_completions` reads each row's depth back from those rows and adds
   per-row tensors to the batch (depth, raw reward, baseline, terminal anchor), which TRL
   shuffles and splits with the rest of the batch into `_compute_loss`;
4. `_get_per_token_logps_and_entropies` (old, reference and current policy alike) runs
   each row's latent trajectory at its own depth, so gradients reach the latent steps.

Four hand-offs stay on the trainer, each because TRL calls the next hook without the data:

- `_rollouts`, beyond step 1: TRL computes the old and reference log-probs inside
  `_generate_and_score_completions` from bare tensors, before the rows hold the extra fields
  and before the batch exists; those calls score at the rollouts' depths;
- `_loss_depths`: TRL's `_compute_loss` passes bare tensors to the log-prob call too, so our
  `_compute_loss` sets its batch's depths for the length of that call;
- `_gathered_rewards`: every process's rewards, from `_calculate_rewards` to the REINFORCE
  reward and baseline; TRL returns only advantages, normalized, which do not give them back;
- `_latent_output`: the loss call's latent states and depth logits, for the terminal KL and
  the REINFORCE loss; TRL's `_compute_loss` keeps only the log-probs.

Rewards: the `lasar_trl.rewards` SID rewards, given by name (`"ranking"`), as the unbound
module-level objects (`lasar_trl.rewards.ranking`) or as classes, are bound to the trainer's
SID map and tokenizer; bound rewards and any other TRL reward are used as given.

Dataset: a `prompt` (ending in `<bot>`) and the `target` item per row, plus `anchors`
(the Stage-2 CoT anchors; the last one is the terminal target) when
`terminal_align_weight > 0`; checked when the trainer is built.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from dataclasses import dataclass

import torch
from datasets import Dataset
from trl import GRPOTrainer
from trl.models.utils import unwrap_model_for_generation
from trl.trainer.utils import entropy_from_logits, pad, selective_log_softmax

from ..decoding import sid_beam_search, sid_sample
from ..losses import ema, reinforce_depth_loss, symmetric_kl
from ..modeling.forward import LatentOutput, add_latent_forward
from ..modeling.lasar import constant_depth
from ..rewards import SidReward, unbound_reward
from ..sid.tokenizer import BOT_TOKEN
from ..sid.trie import SidTrie
from .lasar_common import LatentTrainerMixin
from .lasar_grpo_config import LasarGRPOConfig
from .lasar_sft_trainer import ANCHORS_COLUMN, check_anchor_column, named_eval_datasets
from .sft import RecommenderCheckpointMixin

BASELINE_FILE = "depth_baseline.json"
TARGET_COLUMN = "target"
logger = logging.getLogger(__name__)


@dataclass
class Rollouts:
    """What one generation batch's rollouts leave for the rest of the step, row-aligned."""

    depths: torch.Tensor  # (B,) N_i
    sid_logprob: torch.Tensor  # (B,) full-vocabulary log-prob of the SID at temperature 1
    valid: torch.Tensor  # (B,) the SID is a real item's


def prompt_groups(prompt_ids: list[list[int]], group_size: int) -> tuple[list[list[int]], list[int]]:
    """The distinct prompts of a rollout batch and how many consecutive rows each stands for.

    Runs of identical prompts, cut at `group_size`: a process's slice of the generation batch
    may start or end mid-group, and two groups of one prompt may follow each other."""
    prompts, sizes = [], []
    for ids in prompt_ids:
        if sizes and ids == prompts[-1] and sizes[-1] < group_size:
            sizes[-1] += 1
        else:
            prompts.append(ids)
            sizes.append(1)
    return prompts, sizes


class LasarGRPOTrainer(LatentTrainerMixin, RecommenderCheckpointMixin, GRPOTrainer):
    """Stage-3 trainer: a drop-in for `GRPOTrainer` (pass `LasarGRPOConfig`, SID rewards such
    as `"ranking"` or `lasar_trl.rewards.ranking`, and a Stage-2 checkpoint; a Stage-1 model
    works with `rollout_depth=fixed`)."""

    args: LasarGRPOConfig

    def __init__(self, model, reward_funcs, args: LasarGRPOConfig, *pargs, **kwargs):
        if not isinstance(args, LasarGRPOConfig):
            raise TypeError(f"LasarGRPOTrainer needs a LasarGRPOConfig, got {type(args).__name__}")
        for name in ("tools", "rollout_func", "environment_factory"):
            if kwargs.get(name) is not None:
                raise ValueError(f"{name}: LASAR rollouts are one SID per prompt, decoded by the trainer")
        if reward_funcs is not None:
            reward_funcs = [
                unbound_reward(r) for r in (reward_funcs if isinstance(reward_funcs, list) else [reward_funcs])
            ]
        super().__init__(model, reward_funcs, args, *pargs, **kwargs)
        self.reward_funcs = [
            r.bind(self.sid_map, self.processing_class) if isinstance(r, SidReward) and not r.is_bound else r
            for r in self.reward_funcs
        ]
        base = self.hf_model
        lasar = self._starting_lasar()
        if lasar is None and args.rollout_depth != "fixed":
            raise ValueError(
                f"rollout_depth={args.rollout_depth!r} needs a Policy Head: start from a Stage-2 checkpoint "
                f"({base.config._name_or_path!r} has no lasar_config.json), or use rollout_depth=fixed"
            )
        if lasar is not None and args.fixed_depth is not None and args.fixed_depth > lasar.config.n_max:
            raise ValueError(f"fixed_depth={args.fixed_depth} is above the checkpoint's n_max={lasar.config.n_max}")
        add_latent_forward(base)
        if lasar is not None:
            lasar.requires_grad_(False)  # PEFT froze them anyway; train exactly what this run uses
            lasar.policy_head.requires_grad_(self.head_learns)
            if lasar.latent_projection is not None and args.fixed_depth != 0:
                lasar.latent_projection.requires_grad_(True)
        if self.ref_model is not None:
            self._prepare_reference(base)
        for name, dataset in [("train", self.train_dataset), *named_eval_datasets(self.eval_dataset)]:
            self._check_dataset(dataset, name, base.config.hidden_size)
        group_size = max(self.num_generations, self.num_generations_eval)
        if args.rollout_decoding == "beam_group" and len(self.sid_map) < group_size:  # else some beams are empty
            raise ValueError(
                f"rollout_decoding=beam_group: a group is {group_size} distinct items, the catalog has only "
                f"{len(self.sid_map)}"
            )
        greedy = args.rollout_decoding == "sample" and args.temperature == 0
        deterministic = args.rollout_depth != "sample" and (args.rollout_decoding == "beam" or greedy)  # not beam_group
        if deterministic:
            logger.warning(
                "rollout_depth=%s with %s decoding: all rollouts of a prompt are identical, so every advantage is 0 "
                "and GRPO learns nothing (fine for tests, not for training)",
                args.rollout_depth,
                "beam" if args.rollout_decoding == "beam" else "greedy",
            )
        self.trie = SidTrie.from_sid_map(self.sid_map, self.processing_class).to(self.accelerator.device)
        self.bot_token_id = self.processing_class.convert_tokens_to_ids(BOT_TOKEN)
        self.depth_baseline: float | None = None  # the EMA of the mean total reward
        # hand-offs between TRL's hooks (why each stays on the trainer: the module docstring)
        self._rollouts: Rollouts | None = None  # the last rollouts
        self._loss_depths: torch.Tensor | None = None  # the loss batch's, while `_compute_loss` runs
        self._gathered_rewards: torch.Tensor | None = None  # every process's, of the last batch
        self._latent_output: LatentOutput | None = None  # of the last log-prob call

    def _check_dataset(self, dataset, name: str, hidden_size: int) -> None:
        """Refuse at construction what would fail at the first step: a prompt that is not text
        ending in <bot>, no `target` for the SID rewards, no anchors for the terminal
        alignment. A streamed dataset cannot be read ahead, so it is not checked here."""
        if not isinstance(dataset, Dataset):
            return
        if "prompt" not in dataset.column_names:
            raise ValueError(f"the {name} dataset has no 'prompt' column. Columns: {dataset.column_names}")
        for row, prompt in enumerate(dataset["prompt"]):
            if not (isinstance(prompt, str) and prompt.endswith(BOT_TOKEN)):
                raise ValueError(
                    f"{name} dataset row {row}: the 'prompt' column must be text ending in {BOT_TOKEN} (the latent "
                    f"steps start there), got {str(prompt)[-60:]!r}"
                )
        sid_rewards = [r.name for r in self.reward_funcs if isinstance(r, SidReward)]
        if sid_rewards and TARGET_COLUMN not in dataset.column_names:
            raise ValueError(
                f"the {name} dataset has no {TARGET_COLUMN!r} column (the item each prompt recommends), which the "
                f"rewards {sid_rewards} score against; name other reward_funcs to train without it. Columns: "
                f"{dataset.column_names}"
            )
        if self.args.terminal_align_weight > 0 and self._uses_latents:
            check_anchor_column(
                dataset, hidden_size, name, "the terminal alignment (terminal_align_weight 0 trains without it)"
            )

    @property
    def head_learns(self) -> bool:
        return self.args.rollout_depth == "sample"

    @property
    def _uses_latents(self) -> bool:
        return self.args.fixed_depth != 0

    def _prepare_reference(self, base) -> None:
        """TRL rebuilt the reference from the config's path, as a plain HF model: check it is
        the same recommender (a resized vocabulary), and give it the latent loop and the
        starting LASAR parts (the latent projection reads them)."""
        reference = self.accelerator.unwrap_model(self.ref_model)
        wanted, got = base.get_input_embeddings().weight.shape[0], reference.get_input_embeddings().weight.shape[0]
        if wanted != got:
            raise ValueError(
                f"the reference model from {base.config._name_or_path!r} has {got} token embeddings, the policy "
                f"{wanted}: start RL from a saved recommender checkpoint folder"
            )
        if self.lasar is not None:
            reference.add_module("lasar", copy.deepcopy(self.lasar).requires_grad_(False))
        add_latent_forward(reference)

    # -- rollouts ----------------------------------------------------------------------------

    def _depth_choice(self):
        """How rollouts pick N_i from h_0."""
        if self.args.rollout_depth == "fixed":
            return constant_depth(self.args.fixed_depth)
        head = self.lasar.policy_head
        return head.argmax_depth if self.args.rollout_depth == "argmax" else lambda h0: head.sample_depth(h0)[0]

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        device = self.accelerator.device
        for row, ids in enumerate(prompt_ids):
            if not ids or ids[-1] != self.bot_token_id:
                raise ValueError(f"prompt {row} of the batch does not end in {BOT_TOKEN} once tokenized")
        prompts, sizes = prompt_groups(prompt_ids, num_generations)
        rows = [torch.tensor(ids) for ids in prompts]
        input_ids = pad(rows, self.processing_class.pad_token_id, padding_side="left").to(device)
        attention_mask = pad([torch.ones_like(row) for row in rows], padding_side="left").to(device)
        group_sizes = torch.tensor(sizes, device=device)
        max_steps = None  # with several processes, all run the same number of latent forward calls
        if self.accelerator.num_processes > 1:
            max_steps = self.args.fixed_depth if self.args.rollout_depth == "fixed" else self.lasar.config.n_max
        with (
            unwrap_model_for_generation(
                self.model_wrapped,
                self.accelerator,
                gather_deepspeed3_params=self.args.ds3_gather_for_generation,
                gradient_checkpointing_kwargs=self.args.gradient_checkpointing_kwargs,
            ) as unwrapped,
            torch.no_grad(),
        ):
            model = unwrapped.get_base_model() if hasattr(unwrapped, "get_base_model") else unwrapped
            decode = dict(
                trie=self.trie,
                num_steps=self._depth_choice(),
                max_steps=max_steps,
                latent_projection=self.lasar.latent_projection if self.lasar else None,
            )
            sequences, sid_logprob, leaves, depths = self._decode(model, input_ids, attention_mask, group_sizes, decode)
        self._rollouts = Rollouts(depths, sid_logprob, valid=self.trie.items_of(leaves) >= 0)
        eos = self.processing_class.eos_token_id
        return [row + [eos] for row in sequences.tolist()], None

    def _decode(
        self, model, input_ids: torch.Tensor, attention_mask: torch.Tensor, group_sizes: torch.Tensor, decode: dict
    ) -> tuple[torch.Tensor, ...]:
        """SID tokens, SID log-probs, trie leaves and depths of the rollout rows; prompt b of
        `input_ids` stands for the group_sizes[b] rows that follow, and is prefilled once."""
        decoding, beams = self.args.rollout_decoding, self.args.rollout_num_beams
        if decoding == "beam_group":  # one search and one depth per group: its top group_sizes[b] beams
            output = sid_beam_search(model, input_ids, attention_mask, num_beams=beams, **decode)
            kept = torch.arange(beams, device=group_sizes.device) < group_sizes.unsqueeze(1)  # (B, beams)
            depths = output.depths.repeat_interleave(group_sizes)
            return output.sequences[kept], output.scores[kept], output.leaf_nodes[kept], depths
        if decoding == "beam":
            output = sid_beam_search(
                model, input_ids, attention_mask, num_beams=beams, group_sizes=group_sizes, **decode
            )
            return output.sequences[:, 0], output.scores[:, 0], output.leaf_nodes[:, 0], output.depths
        output = sid_sample(
            model, input_ids, attention_mask, temperature=self.args.temperature, group_sizes=group_sizes, **decode
        )
        return output.sequences, output.log_probs, output.leaf_nodes, output.depths

    def _generate(self, prompts: list):
        outputs = super()._generate(prompts)
        extra_fields = outputs[5]  # TRL writes these into the rows the reward functions see
        mode = "train" if self.model.training else "eval"
        group_size = self.num_generations if mode == "train" else self.num_generations_eval
        extra_fields["sid_logprob"] = self._rollouts.sid_logprob.tolist()
        extra_fields["depth"] = self._rollouts.depths.tolist()
        extra_fields["num_generations"] = [group_size] * len(prompts)
        self._log_rollouts(self._rollouts, mode)
        return outputs

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        self._gathered_rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        return self._gathered_rewards

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)  # writes `_generate`'s extra fields into `inputs`
        mode = "train" if self.model.training else "eval"
        device = self.accelerator.device
        total = (self._gathered_rewards * self.reward_weights.to(device)).nansum(dim=1)  # R of every process's rows
        local = slice(self.accelerator.process_index * len(inputs), (self.accelerator.process_index + 1) * len(inputs))
        output["latent_depth"] = torch.tensor([row["depth"] for row in inputs], device=device)
        output["depth_reward"] = total[local]
        output["depth_baseline"] = self._reinforce_baseline(total, mode)[local]
        if self.args.terminal_align_weight > 0 and self._uses_latents:
            output["terminal_anchor"] = torch.tensor(
                [row[ANCHORS_COLUMN][-1] for row in inputs], dtype=torch.float32, device=device
            )
        return output

    def _reinforce_baseline(self, total_rewards: torch.Tensor, mode: str) -> torch.Tensor:
        """b per row: the group's mean reward, or the EMA of the batch mean before this batch
        (updated after it, in training only)."""
        if self.args.depth_baseline == "group_mean":
            group_size = self.num_generations if mode == "train" else self.num_generations_eval
            return total_rewards.view(-1, group_size).mean(1).repeat_interleave(group_size)
        batch_mean = total_rewards.mean().item()
        baseline = batch_mean if self.depth_baseline is None else self.depth_baseline
        if mode == "train":
            self.depth_baseline = ema(self.depth_baseline, batch_mean, self.args.depth_baseline_decay)
        if self.depth_baseline is not None:
            self._metrics[mode]["depth/baseline"].append(self.depth_baseline)
        return torch.full_like(total_rewards, baseline)

    def _log_rollouts(self, rollouts: Rollouts, mode: str) -> None:
        depths = self.accelerator.gather(rollouts.depths.to(self.accelerator.device))
        valid = self.accelerator.gather(rollouts.valid.to(self.accelerator.device))
        metrics = self._metrics[mode]
        metrics["depth/mean"].append(depths.float().mean().item())
        counts = torch.bincount(depths, minlength=(self.lasar.config.n_max + 1) if self.lasar else 1)
        for depth, count in enumerate(counts.tolist()):
            metrics[f"depth/frac_{depth}"].append(count / len(depths))
        metrics["invalid_rate"].append(1.0 - valid.float().mean().item())

    # -- log-probs through the latent trajectory ----------------------------------------------

    def _get_per_token_logps_and_entropies(
        self, model, input_ids, attention_mask, logits_to_keep, batch_size=None, compute_entropy=False, **unused
    ):
        """Per-token log-probs (and entropies) of the completion (SID tokens + eos), each row
        after its own N_i latent steps; the latent outputs are kept for the extra losses."""
        depths = (self._rollouts.depths if self._loss_depths is None else self._loss_depths).to(input_ids.device)
        prompt_ids, prompt_mask = input_ids[:, :-logits_to_keep], attention_mask[:, :-logits_to_keep]
        completion_ids = input_ids[:, -logits_to_keep:]
        temperature = self.args.temperature or 1.0  # greedy rollouts: score at temperature 1
        needs_head = self.head_learns and self._loss_depths is not None  # the loss's call, in training and evaluation
        batch_size = batch_size or len(input_ids)
        max_steps = self._max_steps(depths)
        logps, entropies = [], []
        for start in range(0, len(input_ids), batch_size):
            rows = slice(start, start + batch_size)
            with self.accelerator.autocast():
                output = model(
                    latent=dict(
                        prompt_ids=prompt_ids[rows],
                        prompt_mask=prompt_mask[rows],
                        num_steps=depths[rows],
                        sid_input_ids=completion_ids[rows, :-1],
                        max_steps=max_steps,
                        depth_logits=needs_head,
                        detach_head_input=not self.args.depth_loss_to_backbone,
                    )
                )
            logits = output.logits.float() / temperature  # (b, C, V)
            logps.append(selective_log_softmax(logits, completion_ids[rows]))
            if compute_entropy:
                entropies.append(entropy_from_logits(logits))
        self._latent_output = output if len(input_ids) <= batch_size else None  # the loss's call is one chunk
        return torch.cat(logps), (torch.cat(entropies) if compute_entropy else None), None

    # -- loss ------------------------------------------------------------------------------------

    def _compute_loss(self, model, inputs):
        self._loss_depths = inputs["latent_depth"]
        loss = super()._compute_loss(model, inputs)  # TRL's GRPO loss, already divided for accumulation
        self._loss_depths = None
        output = self._latent_output
        mode = "train" if self.model.training else "eval"
        extra = loss.new_zeros(())
        if "terminal_anchor" in inputs:
            rows = inputs["latent_depth"] > 0
            if rows.any():
                latent, anchor = self._in_align_space(output.answer_state[rows], inputs["terminal_anchor"][rows])
                terminal_kl = symmetric_kl(latent, anchor, self.args.align_temperature).mean()
                extra = extra + self.args.terminal_align_weight * terminal_kl
                self._log_mean(mode, "terminal_kl", terminal_kl)
        if self.head_learns:
            classes = inputs["latent_depth"] - self.lasar.config.min_depth
            entropy = entropy_from_logits(output.depth_logits)
            depth_loss = reinforce_depth_loss(
                selective_log_softmax(output.depth_logits, classes),
                inputs["depth_reward"],
                inputs["depth_baseline"],
                inputs["latent_depth"],
                self.args.depth_cost,
                entropy,
                self.args.depth_entropy_coef,
            )
            extra = extra + depth_loss
            self._log_mean(mode, "depth/policy_entropy", entropy)
            self._log_mean(mode, "depth/reinforce_loss", depth_loss)
        if output.step_mask.any():
            ratio = self._latent_norm_ratio(output, inputs["prompt_ids"], inputs["prompt_mask"])
            self._metrics[mode]["latent_norm_ratio"].append(ratio)
        normalizer = self.current_gradient_accumulation_steps if mode == "train" else 1
        return loss + extra / normalizer

    def _log_mean(self, mode: str, name: str, value: torch.Tensor) -> None:
        """The mean of `value` over every process's rows, into TRL's metrics."""
        mean = value.detach().float().mean().reshape(1)
        self._metrics[mode][name].append(self.accelerator.gather(mean).mean().item())

    # -- checkpoints: the EMA baseline is optimizer state --------------------------------------

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        super()._save_optimizer_and_scheduler(output_dir)
        if self.args.should_save:
            with open(os.path.join(output_dir, BASELINE_FILE), "w") as f:
                json.dump({"depth_baseline": self.depth_baseline}, f)

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        super()._load_optimizer_and_scheduler(checkpoint)
        path = os.path.join(checkpoint, BASELINE_FILE) if checkpoint else None
        if path and os.path.isfile(path):
            with open(path) as f:
                self.depth_baseline = json.load(f)["depth_baseline"]
