"""The latent loop: N = 0 identity, cache vs no-cache, mixed depths, gradients, checkpointing."""

import pytest
import torch

from lasar_trl.evaluation.recommend import encode_prompts
from lasar_trl.modeling.latent import run_latent_loop, sid_logits_after_latents
from lasar_trl.tasks import history_prompt

HISTORIES = [["1", "2", "3", "4", "5"], ["6"], ["7", "8"]]
TARGETS = ["9", "10", "11"]


def batch(tokenizer, sid_map, rows=range(3)):
    prompts = [history_prompt(HISTORIES[i], sid_map) for i in rows]
    inputs = encode_prompts(tokenizer, prompts, "cpu")
    sid_ids = torch.tensor([tokenizer.convert_tokens_to_ids(list(sid_map[TARGETS[i]])) for i in rows])
    return inputs, sid_ids


def test_zero_steps_is_exactly_the_plain_model(tiny_recommender):
    model, tokenizer, sid_map = tiny_recommender
    inputs, sid_ids = batch(tokenizer, sid_map, rows=[0])
    trajectory = run_latent_loop(model, **inputs, num_steps=torch.tensor([0]))
    logits = sid_logits_after_latents(model, trajectory, sid_ids)
    full = torch.cat([inputs["input_ids"], sid_ids], 1)
    plain = model(full).logits[:, inputs["input_ids"].shape[1] - 1 :]
    torch.testing.assert_close(logits, plain, rtol=1e-5, atol=1e-5)


def test_cached_loop_matches_one_pass_without_cache(tiny_recommender):
    """Feeding [prompt, h_0..h_{N-1}, SID] as input embeddings in one uncached forward must
    reproduce every latent state and every SID logit of the cached loop."""
    model, tokenizer, sid_map = tiny_recommender
    inputs, sid_ids = batch(tokenizer, sid_map, rows=[0])
    n = 3
    trajectory = run_latent_loop(model, **inputs, num_steps=torch.tensor([n]))
    logits = sid_logits_after_latents(model, trajectory, sid_ids)
    embed = model.get_input_embeddings()
    thoughts = torch.cat([trajectory.first_state.unsqueeze(1), trajectory.latent_states[:, : n - 1]], 1)
    sequence = torch.cat([embed(inputs["input_ids"]), thoughts, embed(sid_ids)], 1)
    hidden = model.get_decoder()(inputs_embeds=sequence).last_hidden_state
    prompt_length = inputs["input_ids"].shape[1]
    latent = hidden[:, prompt_length : prompt_length + n]
    torch.testing.assert_close(latent, trajectory.latent_states, rtol=1e-4, atol=1e-5)
    uncached = model.get_output_embeddings()(hidden[:, prompt_length + n - 1 :])
    torch.testing.assert_close(logits, uncached, rtol=1e-4, atol=1e-5)


def test_mixed_depths_in_a_batch_match_rows_run_alone(tiny_recommender):
    model, tokenizer, sid_map = tiny_recommender
    depths = [2, 0, 4]
    inputs, sid_ids = batch(tokenizer, sid_map)
    assert (inputs["attention_mask"] == 0).any()  # left padding is exercised
    together = run_latent_loop(model, **inputs, num_steps=torch.tensor(depths))
    batched_logits = sid_logits_after_latents(model, together, sid_ids)
    for row, depth in enumerate(depths):
        alone_inputs, alone_sid = batch(tokenizer, sid_map, rows=[row])
        alone = run_latent_loop(model, **alone_inputs, num_steps=torch.tensor([depth]))
        torch.testing.assert_close(together.answer_state[row], alone.answer_state[0], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(
            batched_logits[row], sid_logits_after_latents(model, alone, alone_sid)[0], rtol=1e-4, atol=1e-4
        )
    assert together.step_mask.tolist() == [[True, True, False, False], [False] * 4, [True] * 4]


def test_gradients_reach_every_latent_step(tiny_recommender):
    model, tokenizer, sid_map = tiny_recommender
    inputs, sid_ids = batch(tokenizer, sid_map, rows=[0])
    trajectory = run_latent_loop(model, **inputs, num_steps=torch.tensor([4]))
    logits = sid_logits_after_latents(model, trajectory, sid_ids)
    loss = torch.nn.functional.cross_entropy(logits[0, :-1], sid_ids[0])
    # h_0 reaches the SID only through slot 1 -> ... -> slot 4, so a gradient here crossed every step
    (grad_first,) = torch.autograd.grad(loss, trajectory.first_state, retain_graph=True)
    assert grad_first.abs().sum() > 0
    loss.backward()
    assert model.get_input_embeddings().weight.grad.abs().sum() > 0


def test_gradient_checkpointing_does_not_change_the_loss(tiny_recommender):
    model, tokenizer, sid_map = tiny_recommender
    inputs, sid_ids = batch(tokenizer, sid_map)
    depths = torch.tensor([3, 1, 2])

    def loss_and_grad() -> tuple[float, torch.Tensor]:
        model.zero_grad()
        trajectory = run_latent_loop(model, **inputs, num_steps=depths)
        logits = sid_logits_after_latents(model, trajectory, sid_ids)
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), sid_ids.flatten())
        loss.backward()
        return loss.item(), model.get_input_embeddings().weight.grad.clone()

    model.train()
    plain_loss, plain_grad = loss_and_grad()
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    assert any(getattr(m, "gradient_checkpointing", False) for m in model.modules())
    checkpointed_loss, checkpointed_grad = loss_and_grad()
    assert checkpointed_loss == pytest.approx(plain_loss, rel=1e-6)
    torch.testing.assert_close(checkpointed_grad, plain_grad, rtol=1e-4, atol=1e-6)
    assert any(getattr(m, "gradient_checkpointing", False) for m in model.modules())  # restored after the loop


def test_max_steps_below_a_depth_is_refused(tiny_recommender):
    model, tokenizer, sid_map = tiny_recommender
    inputs, _ = batch(tokenizer, sid_map, rows=[0])
    with pytest.raises(ValueError, match="max_steps=1"):
        run_latent_loop(model, **inputs, num_steps=torch.tensor([2]), max_steps=1)
