"""Stage 3 (LasarGRPOTrainer): rollouts, log-probs through the latent trajectory, the extra
losses, depth learning by REINFORCE, reference models, resume, configs."""

import logging
import math
import os

import pytest
import torch
from test_lasar_sft import HIDDEN, latent_windows, save_stage1_checkpoint
from testing_utils import make_tiny_model
from transformers import AutoTokenizer

from lasar_trl.decoding import sid_beam_search, sid_sample
from lasar_trl.modeling.checkpoint import load_recommender
from lasar_trl.modeling.lasar import LasarConfig, attach_lasar, get_lasar, save_lasar, split_lasar_state
from lasar_trl.rewards import ExactMatchReward, PrefixMatchReward, RankingReward, exact_match
from lasar_trl.sid.tokenizer import add_sid_tokens
from lasar_trl.tasks import recommendation_dataset
from lasar_trl.trainers.lasar_grpo_config import LasarGRPOConfig
from lasar_trl.trainers.lasar_grpo_trainer import BASELINE_FILE, LasarGRPOTrainer, prompt_groups

GROUP = 4
N_MAX = 4


def save_stage2_checkpoint(tokenizer, sid_map, folder, **lasar_overrides) -> str:
    """A Stage-2 checkpoint folder: tiny model with SID tokens and LASAR parts, tokenizer, SID map."""
    model = make_tiny_model(tokenizer)
    add_sid_tokens(model, tokenizer, sid_map)
    lasar = attach_lasar(model, LasarConfig(hidden_size=HIDDEN, n_max=N_MAX, min_depth=1, **lasar_overrides))
    model_state, lasar_state = split_lasar_state(model.state_dict())
    model.save_pretrained(folder, state_dict=model_state)
    save_lasar(lasar_state, lasar.config, folder)
    tokenizer.save_pretrained(folder)
    sid_map.save(folder)
    return str(folder)


def grpo_dataset(sid_map, rows: int = 40, anchors: bool = True):
    """prompt / target rows and, per row, 1-4 random CoT anchors."""
    windows = latent_windows(sid_map, rows)
    dataset = recommendation_dataset(windows, sid_map).select_columns(["prompt", "target"])
    if anchors:
        generator = torch.Generator().manual_seed(0)
        dataset = dataset.add_column(
            "anchors", [torch.randn(len(w.history), HIDDEN, generator=generator).tolist() for w in windows]
        )
    return dataset


def grpo_args(output_dir, **overrides) -> LasarGRPOConfig:
    defaults = dict(
        output_dir=str(output_dir),
        max_steps=3,
        per_device_train_batch_size=8,
        num_generations=GROUP,
        learning_rate=1e-3,
        bf16=False,
        use_cpu=True,
        report_to="none",
        logging_steps=1,
        save_strategy="no",
        activation_checkpointing=False,
        seed=0,
        dataloader_num_workers=0,
    )
    return LasarGRPOConfig(**{**defaults, **overrides})


def sid_rewards(sid_map, tokenizer):
    return [
        ExactMatchReward(sid_map, tokenizer),
        RankingReward(sid_map, tokenizer, GROUP),
        PrefixMatchReward(sid_map, tokenizer),
    ]


def make_trainer(
    tokenizer, sid_map, checkpoint, output_dir, reward_funcs=None, dataset=None, model=None, **overrides
) -> LasarGRPOTrainer:
    return LasarGRPOTrainer(
        model=model if model is not None else checkpoint,
        reward_funcs=reward_funcs or sid_rewards(sid_map, tokenizer),
        args=grpo_args(output_dir, **overrides),
        train_dataset=dataset if dataset is not None else grpo_dataset(sid_map),
        processing_class=tokenizer,
    )


@pytest.fixture
def stage2(smol_tokenizer, tiny_sid_map, tmp_path):
    return save_stage2_checkpoint(smol_tokenizer, tiny_sid_map, tmp_path / "stage2")


def logged(trainer, key: str) -> list[float]:
    return [entry[key] for entry in trainer.state.log_history if key in entry]


def test_grpo_run_with_reference_and_checkpointing_is_finite_valid_and_logs_its_metrics(
    smol_tokenizer, tiny_sid_map, stage2, tmp_path
):
    trainer = make_trainer(
        smol_tokenizer, tiny_sid_map, stage2, tmp_path / "out", beta=0.04, activation_checkpointing=True
    )
    assert trainer.ref_model is not None and get_lasar(trainer.ref_model) is not None
    trainer.train()
    assert all(math.isfinite(loss) for loss in logged(trainer, "loss")) and len(logged(trainer, "loss")) == 3
    assert logged(trainer, "invalid_rate") == [0.0, 0.0, 0.0]
    # the reference scores the same latent trajectories: before any update, policy == reference exactly
    assert logged(trainer, "kl")[0] == pytest.approx(0.0, abs=1e-6)
    assert logged(trainer, "kl")[-1] > 0
    for key in [
        "rewards/exact_match/mean",
        "rewards/ranking/mean",
        "rewards/prefix_match/mean",
        "depth/mean",
        "terminal_kl",
        "depth/policy_entropy",
        "latent_norm_ratio",
        "depth/baseline",
    ]:
        assert len(logged(trainer, key)) == 3, key
    fractions = [sum(entry[f"depth/frac_{d}"] for d in range(N_MAX + 1)) for entry in trainer.state.log_history[:3]]
    assert fractions == pytest.approx([1.0] * 3)
    assert all(1 <= depth <= N_MAX for depth in logged(trainer, "depth/mean"))


def score(trainer, prompt_ids, completions) -> torch.Tensor:
    """Per-token log-probs of rollouts as the GRPO loss takes them, at the last rollouts' depths."""
    width = max(map(len, prompt_ids))
    pad = trainer.processing_class.pad_token_id
    input_ids = torch.tensor([[pad] * (width - len(p)) + p + c for p, c in zip(prompt_ids, completions)])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * (len(p) + len(c)) for p, c in zip(prompt_ids, completions)])
    with torch.no_grad():
        return trainer._get_per_token_logps_and_entropies(trainer.model, input_ids, mask, len(completions[0]))[0]


def test_loss_log_probs_are_the_rollouts_own(smol_tokenizer, tiny_sid_map, stage2, tmp_path):
    """Scoring a rollout through its own latent trajectory gives back the log-prob it was
    sampled with: the depths reach the loss row by row."""
    trainer = make_trainer(smol_tokenizer, tiny_sid_map, stage2, tmp_path / "out")
    prompts = grpo_dataset(tiny_sid_map)["prompt"][:8]
    prompt_ids = smol_tokenizer(prompts)["input_ids"]
    torch.manual_seed(3)
    completions, _ = trainer._generate_single_turn(prompt_ids, None, {}, GROUP)
    rollouts = trainer._rollouts
    assert len(set(rollouts.depths.tolist())) > 1  # rows at different depths in one batch
    sid_length = tiny_sid_map.sid_length
    logps = score(trainer, prompt_ids, completions)
    assert logps[:, :sid_length].sum(-1) == pytest.approx(rollouts.sid_logprob, abs=1e-4)
    trainer._rollouts.depths = rollouts.depths.flip(0)  # other depths score other trajectories
    other = score(trainer, prompt_ids, completions)
    assert not torch.allclose(other[:, :sid_length].sum(-1), rollouts.sid_logprob, atol=1e-3)


@pytest.mark.slow  # over 10 s on 2 cores
@pytest.mark.parametrize("reward, depth_cost, direction", [("flat", 0.05, "falls"), ("deeper", 0.0, "rises")])
def test_reinforce_moves_the_sampled_depth(
    smol_tokenizer, tiny_sid_map, stage2, tmp_path, reward, depth_cost, direction
):
    """A reward blind to depth plus a step cost makes depth fall; a reward that grows
    with depth and no cost makes it rise (only the head learns here: learning_rate 0)."""

    def flat(completions, depth, **columns):
        return [0.0] * len(depth)

    def deeper(completions, depth, **columns):
        return [d / N_MAX for d in depth]

    trainer = make_trainer(
        smol_tokenizer,
        tiny_sid_map,
        stage2,
        tmp_path / "out",
        reward_funcs=[flat if reward == "flat" else deeper],
        max_steps=40,
        learning_rate=0.0,
        policy_head_learning_rate=0.02,
        depth_cost=depth_cost,
        terminal_align_weight=0.0,
    )
    trainer.train()
    depths = logged(trainer, "depth/mean")
    first, last = sum(depths[:4]) / 4, sum(depths[-4:]) / 4  # a uniform head starts near 2.5
    if direction == "falls":
        assert last < first - 0.5 and last < 1.8
    else:
        assert last > first + 0.5 and last > 3.2


@pytest.mark.slow  # over 10 s on 2 cores
def test_resume_continues_from_the_same_step_with_the_baseline(smol_tokenizer, tiny_sid_map, stage2, tmp_path):
    full = make_trainer(smol_tokenizer, tiny_sid_map, stage2, tmp_path / "full", max_steps=4)
    full.train()
    interrupted = make_trainer(
        smol_tokenizer, tiny_sid_map, stage2, tmp_path / "run", max_steps=4, save_strategy="steps", save_steps=2
    )
    interrupted.train()
    checkpoint = tmp_path / "run" / "checkpoint-2"
    assert (checkpoint / BASELINE_FILE).is_file() and (checkpoint / "lasar_head.safetensors").is_file()
    resumed = make_trainer(smol_tokenizer, tiny_sid_map, stage2, tmp_path / "run", max_steps=4)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert [e["step"] for e in resumed.state.log_history if "loss" in e] == [1, 2, 3, 4]  # 1-2 from the checkpoint
    for key in ["loss", "depth/mean", "depth/baseline", "reward"]:
        assert logged(resumed, key)[-2:] == pytest.approx(logged(full, key)[-2:], rel=1e-4, abs=1e-6), key
    assert resumed.depth_baseline == pytest.approx(full.depth_baseline)


def test_fixed_depth_zero_is_grpo_without_reasoning_on_a_stage1_model(smol_tokenizer, tiny_sid_map, tmp_path):
    """The MiniOneRec recipe: no Policy Head needed, no latent step, no anchors."""
    stage1 = str(save_stage1_checkpoint(smol_tokenizer, tiny_sid_map, tmp_path / "stage1"))
    trainer = make_trainer(
        smol_tokenizer,
        tiny_sid_map,
        stage1,
        tmp_path / "out",
        rollout_depth="fixed",
        fixed_depth=0,
        dataset=grpo_dataset(tiny_sid_map, anchors=False),
        max_steps=2,
    )
    trainer.train()
    assert logged(trainer, "depth/mean") == [0.0, 0.0]
    assert logged(trainer, "invalid_rate") == [0.0, 0.0]
    assert not logged(trainer, "terminal_kl") and not logged(trainer, "depth/policy_entropy")
    assert all(math.isfinite(loss) for loss in logged(trainer, "loss"))


def test_sampled_depth_needs_a_policy_head(smol_tokenizer, tiny_sid_map, tmp_path):
    stage1 = str(save_stage1_checkpoint(smol_tokenizer, tiny_sid_map, tmp_path / "stage1"))
    with pytest.raises(ValueError, match="needs a Policy Head"):
        make_trainer(smol_tokenizer, tiny_sid_map, stage1, tmp_path / "out")


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda rows: rows.remove_columns("anchors"),
            r"no 'anchors' column .*\(terminal_align_weight 0 trains without it\)",
        ),
        (
            lambda rows: rows.remove_columns("target"),
            r"no 'target' column .* rewards \['exact_match', 'ranking', 'prefix_match'\] score against",
        ),
        (
            lambda rows: rows.map(lambda row, i: {"prompt": row["prompt"] + " " * (i == 3)}, with_indices=True),
            "train dataset row 3: the 'prompt' column must be text ending in <bot>",
        ),
    ],
    ids=["anchors", "target", "prompt"],
)
def test_a_dataset_the_rollouts_cannot_use_is_refused_when_the_trainer_is_built(
    smol_tokenizer, tiny_sid_map, stage2, tmp_path, change, message
):
    with pytest.raises(ValueError, match=message):
        make_trainer(smol_tokenizer, tiny_sid_map, stage2, tmp_path / "out", dataset=change(grpo_dataset(tiny_sid_map)))


def test_rewards_by_name_module_object_or_class_are_bound_to_the_trainers_sid_map(
    smol_tokenizer, tiny_sid_map, stage2, tmp_path
):
    def plain(completions, **columns) -> list[float]:
        return [0.0] * len(completions)

    bound = PrefixMatchReward(tiny_sid_map, smol_tokenizer)
    rewards = ["ranking", exact_match, ExactMatchReward, bound, plain]
    trainer = make_trainer(smol_tokenizer, tiny_sid_map, stage2, tmp_path / "out", reward_funcs=rewards)
    assert trainer.reward_func_names == ["ranking", "exact_match", "exact_match", "prefix_match", "plain"]
    assert all(reward.target_ids == bound.target_ids for reward in trainer.reward_funcs[:4])
    assert trainer.reward_funcs[3] is bound and trainer.reward_funcs[4] is plain
    assert not exact_match.is_bound  # the module's reward stays unbound for the next trainer


def test_beam_rollouts_and_argmax_depth(smol_tokenizer, tiny_sid_map, stage2, tmp_path):
    beam = make_trainer(
        smol_tokenizer,
        tiny_sid_map,
        stage2,
        tmp_path / "beam",
        rollout_decoding="beam",
        rollout_num_beams=5,
        max_steps=2,
    )
    beam.train()
    assert logged(beam, "invalid_rate") == [0.0, 0.0]
    argmax = make_trainer(
        smol_tokenizer, tiny_sid_map, stage2, tmp_path / "argmax", rollout_depth="argmax", max_steps=1
    )
    head = get_lasar(argmax.hf_model).policy_head
    argmax.train()
    assert not logged(argmax, "depth/policy_entropy")  # the head is not trained under argmax
    assert not any(p.requires_grad for p in head.parameters())


def test_reference_from_an_unresized_model_is_refused(smol_tokenizer, smol_path, tiny_sid_map, stage2, tmp_path):
    base = tmp_path / "base"
    make_tiny_model(AutoTokenizer.from_pretrained(smol_path)).save_pretrained(base)  # no SID tokens
    model, _, _ = load_recommender(stage2)  # with its LASAR parts
    model.config._name_or_path = str(base)
    with pytest.raises(ValueError, match="token embeddings"):
        LasarGRPOTrainer(
            model=model,
            reward_funcs=sid_rewards(tiny_sid_map, smol_tokenizer),
            args=grpo_args(tmp_path, beta=0.04),
            train_dataset=grpo_dataset(tiny_sid_map),
            processing_class=smol_tokenizer,
            sid_map=tiny_sid_map,
        )


def test_with_lora_the_reference_is_the_disabled_adapter(smol_tokenizer, tiny_sid_map, stage2, tmp_path):
    from peft import LoraConfig

    trainer = LasarGRPOTrainer(
        model=stage2,
        reward_funcs=sid_rewards(tiny_sid_map, smol_tokenizer),
        args=grpo_args(tmp_path / "out", beta=0.04, max_steps=2),
        train_dataset=grpo_dataset(tiny_sid_map),
        processing_class=smol_tokenizer,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    assert trainer.ref_model is None
    head_before = get_lasar(trainer.hf_model).policy_head.mlp[0].weight.detach().clone()
    trainer.train()
    assert logged(trainer, "kl")[0] == pytest.approx(0.0, abs=1e-6)
    assert all(math.isfinite(loss) for loss in logged(trainer, "loss"))
    assert not torch.equal(get_lasar(trainer.hf_model).policy_head.mlp[0].weight, head_before)
    trainer.save_model(str(tmp_path / "out"))
    assert os.path.isfile(tmp_path / "out" / "lasar_head.safetensors")


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(rollout_depth="random"), "rollout_depth"),
        (dict(rollout_depth="fixed"), "fixed_depth"),
        (dict(fixed_depth=2), "fixed_depth"),
        (dict(rollout_depth="fixed", fixed_depth=-1), "fixed_depth"),
        (dict(rollout_decoding="nucleus"), "rollout_decoding"),
        (dict(rollout_num_beams=0), "rollout_num_beams"),
        (dict(rollout_decoding="beam_group", rollout_num_beams=GROUP - 1), "rollout_num_beams"),
        (dict(rollout_decoding="beam_group", depth_baseline="group_mean"), "depth_baseline=ema"),
        (dict(depth_baseline="median"), "depth_baseline"),
        (dict(depth_baseline_decay=1.0), "depth_baseline_decay"),
        (dict(depth_cost=-0.1), "depth_cost"),
        (dict(align_space="logits"), "align_space"),
        (dict(temperature=-1.0), "temperature"),
        (dict(top_p=0.9), "top_p"),
        (dict(top_k=5), "top_k"),
        (dict(repetition_penalty=1.1), "repetition_penalty"),
    ],
)
def test_invalid_configs_fail_with_the_field_named(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        grpo_args(tmp_path, **overrides)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(per_device_train_batch_size=6), "per_device_train_batch_size"),
        (dict(eval_strategy="steps", per_device_eval_batch_size=6), "per_device_eval_batch_size"),
    ],
)
def test_beam_groups_must_not_straddle_processes(tmp_path, monkeypatch, overrides, message):
    """On 2 processes TRL accepts 6 rows per process for groups of 4, which splits a group."""
    monkeypatch.setattr(LasarGRPOConfig, "world_size", property(lambda self: 2))
    with pytest.raises(ValueError, match=message):
        grpo_args(tmp_path, rollout_decoding="beam_group", rollout_num_beams=GROUP, **overrides)


def test_greedy_rollouts_at_argmax_depth_repeat_within_a_group(smol_tokenizer, tiny_sid_map, stage2, tmp_path):
    trainer = make_trainer(
        smol_tokenizer, tiny_sid_map, stage2, tmp_path / "out", temperature=0.0, rollout_depth="argmax"
    )
    prompts = [p for p in grpo_dataset(tiny_sid_map)["prompt"][:3] for _ in range(GROUP)]
    completions, _ = trainer._generate_single_turn(smol_tokenizer(prompts)["input_ids"], None, {}, GROUP)
    groups = [completions[i : i + GROUP] for i in range(0, len(completions), GROUP)]
    assert all(group.count(group[0]) == GROUP for group in groups)
    # greedy rollouts are scored at temperature 1, as their sid_logprob is
    logps = score(trainer, smol_tokenizer(prompts)["input_ids"], completions)
    assert logps[:, : tiny_sid_map.sid_length].sum(-1) == pytest.approx(trainer._rollouts.sid_logprob, abs=1e-4)


def test_gradient_accumulation_carries_each_rows_depth_into_its_micro_batch(
    smol_tokenizer, tiny_sid_map, stage2, tmp_path
):
    """One generation batch of 8 rollouts is shuffled and split into 2 micro-batches: the
    depths travel with their rows (TRL shuffles and splits per-row tensors together)."""
    trainer = make_trainer(
        smol_tokenizer,
        tiny_sid_map,
        stage2,
        tmp_path / "out",
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        max_steps=1,
    )
    micro_batches = []
    compute_loss = trainer._compute_loss

    def recording(model, inputs):
        micro_batches.append(inputs["latent_depth"].clone())
        return compute_loss(model, inputs)

    trainer._compute_loss = recording
    trainer.train()
    assert [len(depths) for depths in micro_batches] == [4, 4]
    assert sorted(torch.cat(micro_batches).tolist()) == sorted(trainer._rollouts.depths.tolist())
    assert all(math.isfinite(v) for v in logged(trainer, "loss"))


def test_prompt_groups_are_runs_of_identical_prompts_cut_at_the_group_size():
    a, b = [1, 2], [3]
    assert prompt_groups([a, a, b, b, b, b, a], GROUP) == ([a, b, a], [2, 4, 1])  # a slice from mid-group
    assert prompt_groups([a] * 6, GROUP) == ([a, a], [4, 2])  # two groups of one prompt


def left_padded(trainer, prompt_ids) -> dict[str, torch.Tensor]:
    width, pad = max(map(len, prompt_ids)), trainer.processing_class.pad_token_id
    return {
        "input_ids": torch.tensor([[pad] * (width - len(p)) + p for p in prompt_ids]),
        "attention_mask": torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompt_ids]),
    }


@pytest.mark.parametrize("decoding", ["sample", "beam"])
def test_grouped_prefill_gives_the_rollouts_of_prefilling_every_row(
    smol_tokenizer, tiny_sid_map, stage2, tmp_path, monkeypatch, decoding
):
    """Each run of identical prompts (here from mid-group) is prefilled once, then every row
    draws its own depth: sequences, depths and SID log-probs are those of `sid_sample` /
    `sid_beam_search` prefilling every row, under the same seed."""
    import lasar_trl.modeling.latent as latent

    decoder_forward, prefill_rows = latent.decoder_forward, []

    def recording(model, attention_mask, cache, input_ids=None, inputs_embeds=None):
        if input_ids is not None:  # the latent steps feed embeddings
            prefill_rows.append(len(input_ids))
        return decoder_forward(model, attention_mask, cache, input_ids=input_ids, inputs_embeds=inputs_embeds)

    trainer = make_trainer(
        smol_tokenizer, tiny_sid_map, stage2, tmp_path / "out", rollout_decoding=decoding, rollout_num_beams=3
    )
    prompts = [p for p in grpo_dataset(tiny_sid_map)["prompt"][:3] for _ in range(GROUP)][2:]
    prompt_ids = smol_tokenizer(prompts)["input_ids"]
    monkeypatch.setattr(latent, "decoder_forward", recording)
    torch.manual_seed(7)
    completions, _ = trainer._generate_single_turn(prompt_ids, None, {}, GROUP)
    assert prefill_rows == [3]  # runs of 2, 4 and 4 rows
    grouped = trainer._rollouts
    torch.manual_seed(7)
    decode = dict(
        trie=trainer.trie,
        num_steps=trainer._depth_choice(),
        latent_projection=get_lasar(trainer.hf_model).latent_projection,
    )
    if decoding == "sample":
        alone = sid_sample(trainer.model, **left_padded(trainer, prompt_ids), temperature=1.0, **decode)
        sequences, sid_logprob = alone.sequences, alone.log_probs
    else:
        alone = sid_beam_search(trainer.model, **left_padded(trainer, prompt_ids), num_beams=3, **decode)
        sequences, sid_logprob = alone.sequences[:, 0], alone.scores[:, 0]
    assert prefill_rows == [3, len(prompt_ids)]
    assert [row[:-1] for row in completions] == sequences.tolist()
    assert torch.equal(grouped.depths, alone.depths)
    torch.testing.assert_close(grouped.sid_logprob, sid_logprob, rtol=1e-5, atol=1e-5)
    groups = (slice(0, 2), slice(2, 6), slice(6, 10))
    assert any(len(set(grouped.depths[rows].tolist())) > 1 for rows in groups)  # one group, several depths


def test_beam_group_rollouts_are_the_top_beams_at_one_depth_per_group(
    smol_tokenizer, tiny_sid_map, stage2, tmp_path, caplog
):
    """MiniOneRec's rollouts: G distinct real items per prompt, best first, one sampled depth
    per group, scored by the loss at their own log-probs; and GRPO trains on them."""
    trainer = make_trainer(
        smol_tokenizer,
        tiny_sid_map,
        stage2,
        tmp_path / "out",
        rollout_decoding="beam_group",
        rollout_num_beams=GROUP + 1,
        max_steps=2,
    )
    prompts = [p for p in grpo_dataset(tiny_sid_map)["prompt"][:4] for _ in range(GROUP)]
    prompt_ids = smol_tokenizer(prompts)["input_ids"]
    torch.manual_seed(0)
    completions, _ = trainer._generate_single_turn(prompt_ids, None, {}, GROUP)
    rollouts = trainer._rollouts
    assert rollouts.valid.all()
    depths = rollouts.depths.view(-1, GROUP)
    assert (depths == depths[:, :1]).all() and len(set(depths[:, 0].tolist())) > 1  # sampled once per group
    for start in range(0, len(completions), GROUP):
        assert len({tuple(row) for row in completions[start : start + GROUP]}) == GROUP
    logprobs = rollouts.sid_logprob.view(-1, GROUP)
    assert (logprobs[:, :-1] >= logprobs[:, 1:]).all()
    logps = score(trainer, prompt_ids, completions)
    assert logps[:, : tiny_sid_map.sid_length].sum(-1) == pytest.approx(rollouts.sid_logprob, abs=1e-4)
    trainer.train()
    assert logged(trainer, "invalid_rate") == [0.0, 0.0]
    assert all(math.isfinite(loss) for loss in logged(trainer, "loss")) and logged(trainer, "depth/policy_entropy")
    with caplog.at_level(logging.WARNING):  # the rollouts of a group differ even at argmax depth
        make_trainer(
            smol_tokenizer,
            tiny_sid_map,
            stage2,
            tmp_path / "argmax",
            rollout_decoding="beam_group",
            rollout_num_beams=GROUP,
            rollout_depth="argmax",
        )
    assert "GRPO learns nothing" not in caplog.text
