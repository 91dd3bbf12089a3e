"""SID trie, constrained beam search and `recommend`, on tiny random models with the real tokenizer."""

import random

import pytest
import torch
from testing_utils import make_tiny_model
from transformers import GenerationConfig

from lasar_trl.decoding import sid_beam_search, sid_sample
from lasar_trl.evaluation.recommend import encode_prompts, recommend
from lasar_trl.modeling.checkpoint import SidMapMismatchError, load_recommender
from lasar_trl.modeling.latent import run_latent_loop, sid_logits_after_latents
from lasar_trl.sid import SidMap
from lasar_trl.sid.tokenizer import BOT_TOKEN, add_sid_tokens
from lasar_trl.sid.trie import SidTrie, SidTrieLogitsProcessor
from lasar_trl.tasks import history_prompt

EOS = 99


@pytest.fixture
def hand_trie():
    # items: 0 -> (1, 5), 1 -> (1, 6), 2 -> (2, 5)
    return SidTrie(torch.tensor([[1, 5], [1, 6], [2, 5]]), eos_token_id=EOS)


def allowed(trie, nodes, depth, dead=None, vocab=100):
    masked = trie.mask_scores(torch.zeros(len(nodes), vocab), nodes, depth, dead)
    return [set(torch.nonzero(row > float("-inf")).flatten().tolist()) for row in masked]


def test_trie_masks_by_hand(hand_trie):
    root = hand_trie.root(1)
    assert allowed(hand_trie, root, 0) == [{1, 2}]
    after_1 = hand_trie.advance(root, 0, torch.tensor([1]))
    after_2 = hand_trie.advance(root, 0, torch.tensor([2]))
    assert allowed(hand_trie, after_1, 1) == [{5, 6}]
    assert allowed(hand_trie, after_2, 1) == [{5}]
    assert hand_trie.advance(root, 0, torch.tensor([5])).item() == -1  # not a first-level token
    leaves = hand_trie.advance(torch.cat([after_1, after_1, after_2]), 1, torch.tensor([5, 6, 5]))
    assert hand_trie.items_of(leaves).tolist() == [0, 1, 2]
    assert allowed(hand_trie, leaves[:1], 2) == [{EOS}]


def test_banning_all_items_under_a_prefix_removes_the_prefix(hand_trie):
    dead = hand_trie.dead_nodes([[2], [0]])
    root = hand_trie.root(2)
    assert allowed(hand_trie, root, 0, dead) == [{1}, {1, 2}]  # row 0 banned the only item under 2
    after_1 = hand_trie.advance(root, 0, torch.tensor([1, 1]))
    assert allowed(hand_trie, after_1, 1, dead) == [{5, 6}, {6}]


def test_duplicate_sids_are_refused():
    with pytest.raises(ValueError, match="unique"):
        SidTrie(torch.tensor([[1, 5], [1, 5]]), eos_token_id=EOS)


def sid_log_prob(model, tokenizer, prompt: str, sid: str) -> float:
    """Teacher-forced log p(SID | prompt) by one full forward pass, no cache."""
    prompt_ids = tokenizer(prompt)["input_ids"]
    sid_ids = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(sid))
    ids = torch.tensor([prompt_ids + sid_ids])
    with torch.no_grad():
        log_probs = torch.log_softmax(model(ids).logits[0].float(), dim=-1)
    positions = range(len(prompt_ids) - 1, len(prompt_ids) - 1 + len(sid_ids))
    return sum(log_probs[p, t].item() for p, t in zip(positions, sid_ids))


def test_exhaustive_beam_search_scores_every_item_exactly(tiny_recommender):
    """With as many beams as items, beam search must return every item with its exact
    SID log-prob, also for left-padded rows (pad == eos)."""
    model, tokenizer, sid_map = tiny_recommender
    assert tokenizer.pad_token_id == tokenizer.eos_token_id
    histories = [["1", "2", "3", "4", "5", "6"], ["7"]]  # very different lengths -> heavy left padding
    prompts = [history_prompt(h, sid_map) for h in histories]
    trie = SidTrie.from_sid_map(sid_map, tokenizer)
    batch = encode_prompts(tokenizer, prompts, "cpu")
    assert (batch["attention_mask"][1] == 0).any()
    output = sid_beam_search(model, **batch, trie=trie, num_beams=len(sid_map))
    items = trie.items_of(output.leaf_nodes)
    for row, prompt in enumerate(prompts):
        assert sorted(items[row].tolist()) == list(range(len(sid_map)))
        assert (output.scores[row][:-1] >= output.scores[row][1:]).all()
        for beam in (0, 7, len(sid_map) - 1):
            expected = sid_log_prob(model, tokenizer, prompt, sid_map.sid(sid_map.item_ids[items[row, beam]]))
            assert output.scores[row, beam].item() == pytest.approx(expected, abs=1e-4)


@pytest.mark.slow  # over 10 s on 2 cores
def test_beam_search_after_latent_steps_scores_every_item_exactly(tiny_recommender):
    """Rows of different depths, left-padded: after the latent loop the cache expanded per
    beam must give each item the SID log-prob of the teacher-forced latent trajectory."""
    model, tokenizer, sid_map = tiny_recommender
    histories = [["1", "2", "3", "4", "5", "6"], ["7"]]
    depths = torch.tensor([3, 1])
    trie = SidTrie.from_sid_map(sid_map, tokenizer)
    batch = encode_prompts(tokenizer, [history_prompt(h, sid_map) for h in histories], "cpu")
    output = sid_beam_search(model, **batch, trie=trie, num_beams=len(sid_map), num_steps=depths)
    assert output.depths.tolist() == [3, 1]
    items = trie.items_of(output.leaf_nodes)
    for row, history in enumerate(histories):
        for beam in (0, 5, len(sid_map) - 1):
            sid = sid_map[sid_map.item_ids[items[row, beam]]]
            expected = latent_log_prob(
                model, tokenizer, sid_map, history, int(depths[row]), tokenizer.convert_tokens_to_ids(list(sid))
            )
            assert output.scores[row, beam].item() == pytest.approx(expected, abs=1e-4)


@pytest.mark.slow  # over 10 s on 2 cores
@pytest.mark.parametrize("seed", range(4))
def test_recommend_returns_valid_distinct_items_batched_as_alone(smol_tokenizer, seed):
    """Property-style: random models, random SID maps, random histories."""
    rng = random.Random(seed)
    num_items = rng.randint(12, 60)
    codes = torch.randint(0, rng.randint(2, 6), (num_items, 3), generator=torch.Generator().manual_seed(seed))
    sid_map = SidMap.from_codes([f"i{n}" for n in range(num_items)], codes)
    model = make_tiny_model(smol_tokenizer, seed=seed)
    add_sid_tokens(model, smol_tokenizer, sid_map)
    model.eval()
    histories = [rng.sample(sid_map.item_ids, rng.randint(1, 10)) for _ in range(5)]
    top_k, beams = 5, rng.choice([5, 8, 12])
    exclude = bool(seed % 2)
    recs = recommend(
        model,
        smol_tokenizer,
        sid_map,
        histories,
        top_k=top_k,
        num_beams=beams,
        batch_size=3,
        exclude_items=histories if exclude else None,
    )
    for history, items, sid in zip(histories, recs.items, recs.generated_sids):
        assert len(items) == top_k and len(set(items)) == top_k
        assert set(items) <= set(sid_map.item_ids)
        assert sid in sid_map.items_by_sid
        if exclude:
            assert not set(items) & set(history)
    for row, history in enumerate(histories):
        alone = recommend(
            model,
            smol_tokenizer,
            sid_map,
            [history],
            top_k=top_k,
            num_beams=beams,
            exclude_items=[history] if exclude else None,
        )
        assert alone.scores[0] == pytest.approx(recs.scores[row], abs=1e-4)
        # a random tiny model has near-ties: only items tied at the cut-off may differ
        alone_scores = dict(zip(alone.items[0], alone.scores[0]))
        batched_scores = dict(zip(recs.items[row], recs.scores[row]))
        for item in alone_scores.keys() & batched_scores.keys():
            assert alone_scores[item] == pytest.approx(batched_scores[item], abs=1e-4)
        for item in alone_scores.keys() ^ batched_scores.keys():
            score = alone_scores.get(item, batched_scores.get(item))
            assert score == pytest.approx(recs.scores[row][-1], abs=1e-4)


def test_exclude_history_on_dense_trie_keeps_recommending(tiny_recommender):
    model, tokenizer, sid_map = tiny_recommender
    history = sid_map.item_ids[:30]  # 30 of 40 items banned
    recs = recommend(model, tokenizer, sid_map, [history], top_k=10, num_beams=10, exclude_items=[history])
    assert sorted(recs.items[0]) == sorted(sid_map.item_ids[30:])


def test_logits_processor_constrains_generate_with_left_padding_and_pad_eq_eos(tiny_recommender):
    model, tokenizer, sid_map = tiny_recommender
    trie = SidTrie.from_sid_map(sid_map, tokenizer)
    prompts = [history_prompt(["1", "2", "3", "4", "5"], sid_map), history_prompt(["9"], sid_map)]
    batch = encode_prompts(tokenizer, prompts, "cpu")
    prompt_length = batch["input_ids"].shape[1]
    num_beams = 4
    config = GenerationConfig(
        do_sample=False,
        num_beams=num_beams,
        num_return_sequences=num_beams,
        max_new_tokens=trie.sid_length + 1,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        length_penalty=0.0,
    )
    processor = SidTrieLogitsProcessor(trie, prompt_length, banned_items=[[0, 1, 2], [3]], num_beams=num_beams)
    out = model.generate(**batch, generation_config=config, logits_processor=[processor])
    generated = out[:, prompt_length:]
    for row in generated.tolist():
        sid = "".join(tokenizer.convert_ids_to_tokens(row[: trie.sid_length]))
        assert sid in sid_map.items_by_sid
        assert row[trie.sid_length] == tokenizer.eos_token_id


def test_hostile_generation_config_does_not_change_recommendations(tiny_recommender, tmp_path):
    model, tokenizer, sid_map = tiny_recommender
    histories = [["1", "2"], ["3", "4", "5"]]
    before = recommend(model, tokenizer, sid_map, histories, top_k=5, num_beams=10)
    model.generation_config = GenerationConfig(
        do_sample=True,
        temperature=30.0,
        top_k=1,
        num_beams=1,
        max_new_tokens=1,
        repetition_penalty=9.0,
        no_repeat_ngram_size=1,
        bad_words_ids=[[tokenizer.convert_tokens_to_ids("<a_0>")]],
    )
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    sid_map.save(tmp_path)
    loaded, loaded_tokenizer, loaded_map = load_recommender(str(tmp_path))
    assert loaded.generation_config.do_sample  # the hostile config is really there
    after = recommend(loaded, loaded_tokenizer, loaded_map, histories, top_k=5, num_beams=10)
    assert after.items == before.items
    for row_after, row_before in zip(after.scores, before.scores):
        assert row_after == pytest.approx(row_before, abs=1e-5)


def test_checkpoint_with_another_sid_map_is_refused(tiny_recommender, tmp_path):
    model, tokenizer, sid_map = tiny_recommender
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    sid_map.save(tmp_path)
    other = SidMap(
        {item: sid_map[item] for item in reversed(sid_map.item_ids)} | {"0": sid_map["1"], "1": sid_map["0"]}
    )
    with pytest.raises(SidMapMismatchError, match="item '0'"):
        load_recommender(str(tmp_path), other)


def test_bot_token_is_special_and_sid_tokens_are_not(tiny_recommender):
    _, tokenizer, sid_map = tiny_recommender
    ids = tokenizer(sid_map.sid("3") + BOT_TOKEN)["input_ids"]
    assert len(ids) == sid_map.sid_length + 1
    assert tokenizer.decode(ids, skip_special_tokens=True) == sid_map.sid("3")


def latent_log_prob(model, tokenizer, sid_map, history, depth: int, sid_ids: list[int]) -> float:
    """Teacher-forced log p(SID | prompt, `depth` latent steps), one row alone."""
    alone = encode_prompts(tokenizer, [history_prompt(history, sid_map)], "cpu")
    with torch.no_grad():
        trajectory = run_latent_loop(model, **alone, num_steps=torch.tensor([depth]))
        log_probs = torch.log_softmax(sid_logits_after_latents(model, trajectory, torch.tensor([sid_ids]))[0, :-1], -1)
    return log_probs.gather(-1, torch.tensor(sid_ids).unsqueeze(-1)).sum().item()


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_sampled_sids_are_real_items_with_their_exact_log_probs(tiny_recommender, temperature):
    model, tokenizer, sid_map = tiny_recommender
    histories = [["1", "2", "3", "4", "5", "6"], ["7"], ["8", "9"]] * 4
    depths = torch.tensor([2, 0, 3] * 4)
    trie = SidTrie.from_sid_map(sid_map, tokenizer)
    batch = encode_prompts(tokenizer, [history_prompt(h, sid_map) for h in histories], "cpu")
    output = sid_sample(
        model, **batch, trie=trie, temperature=temperature, num_steps=depths, generator=torch.Generator().manual_seed(0)
    )
    assert (trie.items_of(output.leaf_nodes) >= 0).all() and output.depths.tolist() == depths.tolist()
    assert len({tuple(row) for row in output.sequences.tolist()}) > 3  # it samples, not a constant
    for row in (0, 1, 5):
        expected = latent_log_prob(
            model, tokenizer, sid_map, histories[row], int(depths[row]), output.sequences[row].tolist()
        )
        assert output.log_probs[row].item() == pytest.approx(expected, abs=1e-4)
    again = sid_sample(
        model, **batch, trie=trie, temperature=temperature, num_steps=depths, generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal(again.sequences, output.sequences)


def test_greedy_sampling_is_one_beam_search(tiny_recommender):
    model, tokenizer, sid_map = tiny_recommender
    trie = SidTrie.from_sid_map(sid_map, tokenizer)
    batch = encode_prompts(tokenizer, [history_prompt(h, sid_map) for h in (["1", "2"], ["3"])], "cpu")
    depths = torch.tensor([1, 4])
    greedy = sid_sample(model, **batch, trie=trie, temperature=0.0, num_steps=depths)
    beam = sid_beam_search(model, **batch, trie=trie, num_beams=1, num_steps=depths)
    assert torch.equal(greedy.sequences, beam.sequences[:, 0])
    torch.testing.assert_close(greedy.log_probs, beam.scores[:, 0], rtol=1e-5, atol=1e-5)


def test_group_sizes_prefill_each_prompt_once_and_decode_as_repeated_rows(tiny_recommender):
    """Prompt b prefilled once for group_sizes[b] rows, each at its own depth, decodes as
    those rows prefilled one by one."""
    model, tokenizer, sid_map = tiny_recommender
    trie = SidTrie.from_sid_map(sid_map, tokenizer)
    histories, sizes = [["1", "2", "3", "4"], ["7"]], [3, 1]
    depths = torch.tensor([0, 2, 3, 1])  # per row of the result
    grouped_batch = encode_prompts(tokenizer, [history_prompt(h, sid_map) for h in histories], "cpu")
    repeated = [h for h, size in zip(histories, sizes) for _ in range(size)]
    batch = encode_prompts(tokenizer, [history_prompt(h, sid_map) for h in repeated], "cpu")
    group_sizes = torch.tensor(sizes)
    beam = sid_beam_search(model, **batch, trie=trie, num_beams=4, num_steps=depths)
    grouped = sid_beam_search(model, **grouped_batch, trie=trie, num_beams=4, num_steps=depths, group_sizes=group_sizes)
    assert torch.equal(grouped.sequences, beam.sequences) and torch.equal(grouped.depths, depths)
    torch.testing.assert_close(grouped.scores, beam.scores, rtol=1e-5, atol=1e-5)
    greedy = sid_sample(model, **batch, trie=trie, temperature=0.0, num_steps=depths)
    grouped = sid_sample(model, **grouped_batch, trie=trie, temperature=0.0, num_steps=depths, group_sizes=group_sizes)
    assert torch.equal(grouped.sequences, greedy.sequences)
    torch.testing.assert_close(grouped.log_probs, greedy.log_probs, rtol=1e-5, atol=1e-5)


def test_prompts_must_end_in_bot_once_tokenized(tiny_recommender):
    _, tokenizer, sid_map = tiny_recommender
    assert encode_prompts(tokenizer, [history_prompt(["1"], sid_map)], "cpu")["input_ids"][0, -1] == (
        tokenizer.convert_tokens_to_ids(BOT_TOKEN)
    )
    with pytest.raises(ValueError, match=f"prompt 1 does not end in {BOT_TOKEN}"):
        encode_prompts(tokenizer, [history_prompt(["1"], sid_map), history_prompt(["2"], sid_map) + "!"], "cpu")


def test_policy_depths_are_the_depths_recommend_reasons_for(tiny_recommender):
    from lasar_trl.evaluation.recommend import policy_depths
    from lasar_trl.modeling.lasar import LasarConfig, attach_lasar, get_lasar

    model, tokenizer, sid_map = tiny_recommender
    attach_lasar(model, LasarConfig(hidden_size=model.config.hidden_size, n_max=6, min_depth=1))
    torch.nn.init.normal_(get_lasar(model).policy_head.mlp[2].weight, std=3.0)  # spread the argmax over depths
    histories = [sid_map.item_ids[i : i + 1 + i % 4] for i in range(12)]
    depths = policy_depths(model, tokenizer, sid_map, histories, batch_size=5)
    assert depths == recommend(model, tokenizer, sid_map, histories, num_beams=3, top_k=3, batch_size=4).depths
    assert len(set(depths)) > 1


def test_an_explicit_cot_checkpoint_writes_its_rationale_then_searches(tiny_recommender):
    """Each prompt gets a greedy rationale ended by <eot> (forced when max tokens run out),
    exactly what generate() writes; the SID search then starts after it."""
    from lasar_trl.evaluation.recommend import write_rationales
    from lasar_trl.sid.tokenizer import EOT_TOKEN, add_eot_token

    model, tokenizer, sid_map = tiny_recommender
    add_eot_token(model, tokenizer)
    eot_id = tokenizer.convert_tokens_to_ids(EOT_TOKEN)
    histories = [["1", "2", "3"], ["4"], ["5", "6"]]
    batch = encode_prompts(tokenizer, [history_prompt(h, sid_map) for h in histories], "cpu")
    extended, lengths = write_rationales(model, **batch, eot_id=eot_id, max_tokens=3)
    assert all(1 <= n <= 4 for n in lengths)
    assert extended["attention_mask"].sum(1).tolist() == [
        int(m.sum()) + n for m, n in zip(batch["attention_mask"], lengths)
    ]
    assert (extended["input_ids"][:, -1] == eot_id).all()  # left-padded: every row ends with its <eot>
    config = GenerationConfig(max_new_tokens=3, do_sample=False, eos_token_id=eot_id, pad_token_id=eot_id)
    expected = model.generate(**batch, generation_config=config)[:, batch["input_ids"].shape[1] :]
    for row, n in enumerate(lengths):
        written = extended["input_ids"][row, -n:].tolist()
        assert written[: min(n, 3)] == expected[row, : min(n, 3)].tolist()

    recs = recommend(model, tokenizer, sid_map, histories, num_beams=5, top_k=5, max_rationale_tokens=3)
    assert recs.rationale_tokens == lengths and recs.depths == [0, 0, 0]
    assert all(len(items) == 5 and set(items) <= set(sid_map.item_ids) for items in recs.items)
    with pytest.raises(ValueError, match="explicit-CoT"):
        recommend(model, tokenizer, sid_map, histories, depth=2)
