"""The model card of a recommender checkpoint: rendered from plain data, written by every save of a tiny
Stage-1 run and updated with its evaluation, and replaced atomically."""

import json
import os
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from trl import ModelConfig, SFTConfig

from lasar_trl import Recommender
from lasar_trl.configs import RecScriptArguments
from lasar_trl.data import load_dataset_spec
from lasar_trl.modeling.model_card import MODEL_CARD_FILE, CardFacts, render_model_card
from lasar_trl.sid import SidMap
from lasar_trl.stages import stage1

TRL_CARD = """---
tags:
- trl
---

# Model Card for run

This model is a fine-tuned version of [None](https://huggingface.co/None).
It has been trained using [TRL](https://github.com/huggingface/trl).

## Quick start

A chat model's pipeline.

## Training procedure

This model was trained with SFT.
"""

FACTS = CardFacts(
    model_id="outputs/stage1",
    stage="Stage 1 SFT",
    started_from="scratch:tiny",
    dataset="ml-100k",
    prompt_template="compact",
    max_history=50,
    sid_stats={
        "num_items": 1682,
        "sid_length": 4,
        "levels": 3,
        "codebook_size_per_level": [256, 256, 256, 256],
        "codes_used_per_level": [256, 250, 200, 10],
        "shared_sids": 267,
        "items_in_shared_sids": 743,
        "dataset": "ml-100k",
    },
    metrics={
        "ndcg@10": 0.0899,
        "hr@10": 0.1697,
        "hr@1": 0.0329,
        "invalid_rate": 0.0,
        "num_samples": 943,
        "num_beams": 20,
        "exclude_history": True,
        "dataset": "ml-100k",
        "split": "test",
        "baselines": {"most-popular": {"hr@1": 0.0095, "hr@10": 0.0742, "ndcg@10": 0.0343}},
    },
)

EXPECTED_SECTIONS = """## Recommender

- Stage: Stage 1 SFT
- Started from: `scratch:tiny`
- Dataset: ml-100k
- Prompts: `compact` template, the last 50 items of a history (`max_history`)

### Semantic IDs

- Items: 1682
- Built from: ml-100k
- Tokens per SID: 4
- Quantised levels: 3
- Codebook size per level: 256, 256, 256, 256
- Codes used per level: 256, 250, 200, 10
- Shared SIDs: 267, holding 743 items, before disambiguation

### Evaluation

ml-100k test: 943 requests, 20 beams, exclude_history=True.

| metric | this model | most-popular |
|---|---|---|
| hr@1 | 0.0329 | 0.0095 |
| hr@10 | 0.1697 | 0.0742 |
| ndcg@10 | 0.0899 | 0.0343 |
| invalid_rate | 0.0000 |  |

### Quick start

```python
from lasar_trl import Recommender

recommender = Recommender.from_pretrained("outputs/stage1")
for rec in recommender.recommend([["item id", "item id"]], top_k=10):  # histories, oldest first
    print(rec.items, rec.scores, rec.depth)
```
"""


def test_the_recommender_sections_replace_trls_chat_quick_start():
    card = render_model_card(TRL_CARD, FACTS)
    head = TRL_CARD.split("## Quick start")[0].replace(
        "a fine-tuned version of [None](https://huggingface.co/None).",
        "a Semantic-ID recommender fine-tuned from `scratch:tiny`.",
    )
    assert card == head + EXPECTED_SECTIONS + "\n## Training procedure\n\nThis model was trained with SFT.\n"


def test_a_card_without_quick_start_gets_the_sections_appended_and_an_unrecorded_max_history_is_said():
    facts = CardFacts(
        model_id="ckpt", stage="SidSFTTrainer", started_from=None, dataset=None, prompt_template="english",
        max_history=None,
    )  # fmt: skip
    card = render_model_card("# Card\n", facts)
    assert card.startswith("# Card\n\n## Recommender\n\n- Stage: SidSFTTrainer\n- Started from: `unknown`\n")
    assert "`max_history` not recorded" in card and "(no statistics recorded)" in card
    assert "### Evaluation" not in card


@pytest.fixture
def tiny_stage1(tiny_recbole_dir, tmp_path) -> Path:
    """A 2-step Stage-1 run of scratch:tiny with max_history 3, a checkpoint at step 2, evaluated."""
    dataset = f"recbole:{tiny_recbole_dir}"
    items = sorted(load_dataset_spec(dataset).catalog)
    codes = torch.randint(0, 4, (len(items), 2), generator=torch.Generator().manual_seed(0))
    SidMap.from_codes(items, codes).save(tmp_path / "sids")
    script_args = RecScriptArguments(
        dataset=dataset,
        sid_map=str(tmp_path / "sids" / "sid_map.json"),
        max_history=3,
        prompt_template="compact",
        eval_max_samples=4,
        eval_num_beams=5,
    )
    training_args = SFTConfig(
        output_dir=str(tmp_path / "stage1"),
        max_steps=2,
        per_device_train_batch_size=4,
        save_strategy="steps",
        save_steps=2,
        report_to="none",
        use_cpu=True,
        bf16=False,
        activation_checkpointing=False,
        dataloader_num_workers=0,
    )
    stage1.run(script_args, training_args, ModelConfig(model_name_or_path="scratch:tiny"))
    return tmp_path / "stage1"


def test_a_stage1_run_writes_the_card_with_its_evaluation_and_records_max_history(tiny_stage1):
    card = (tiny_stage1 / MODEL_CARD_FILE).read_text()
    results = json.loads((tiny_stage1 / "eval_results.json").read_text())
    assert "This model is a Semantic-ID recommender fine-tuned from `scratch:tiny`." in card
    assert "- Stage: Stage 1 SFT\n- Started from: `scratch:tiny`\n- Dataset: tiny\n" in card
    assert "- Prompts: `compact` template, the last 3 items of a history (`max_history`)" in card
    assert "- Items: 29\n- Tokens per SID: 3\n- Quantised levels: 2\n" in card
    assert f"| hr@20 | {results['hr@20']:.4f} | {results['baselines']['most-popular']['hr@20']:.4f} |" in card
    assert "tiny test: 4 requests, 5 beams, exclude_history=True." in card
    assert f'Recommender.from_pretrained("{tiny_stage1}")' in card
    assert "pipeline(" not in card and "- lasar-trl" in card and "Cite TRL as" in card  # TRL's card, extended
    # the checkpoint of step 2 has its own card, written before any evaluation
    checkpoint_card = (tiny_stage1 / "checkpoint-2" / MODEL_CARD_FILE).read_text()
    assert "- Stage: Stage 1 SFT" in checkpoint_card and "### Evaluation" not in checkpoint_card
    # max_history is recorded where the prompt template is, and is what the Recommender prompts with
    config = json.loads((tiny_stage1 / "config.json").read_text())
    assert (config["max_history"], config["prompt_template"]) == (3, "compact")
    assert Recommender.from_pretrained(str(tiny_stage1), device="cpu").max_history == 3
    assert not [name for name in os.listdir(tiny_stage1) if name.startswith(".")]  # no staging left


def test_an_existing_card_is_replaced_atomically(tiny_stage1, monkeypatch):
    """The card is renamed into place: the old file is never written over (a link to it keeps its text),
    and a failure while rendering leaves the old card as it was."""
    from lasar_trl.trainers import sft
    from lasar_trl.trainers.sft import SidSFTTrainer

    card = tiny_stage1 / MODEL_CARD_FILE
    before = card.read_text()
    os.link(card, tiny_stage1 / "old-card")
    trainer = SidSFTTrainer(
        model=str(tiny_stage1),
        args=SFTConfig(
            output_dir=str(tiny_stage1), report_to="none", use_cpu=True, bf16=False, activation_checkpointing=False
        ),
        train_dataset=Dataset.from_dict({"prompt": ["a"], "completion": ["b"]}),
        stage="Stage 2 latent SFT",
    )
    monkeypatch.setattr(sft, "render_model_card", lambda *_: (_ for _ in ()).throw(RuntimeError("render failed")))
    with pytest.raises(RuntimeError, match="render failed"):
        trainer.create_model_card()
    assert card.read_text() == before
    monkeypatch.undo()
    trainer.create_model_card()
    assert "- Stage: Stage 2 latent SFT" in card.read_text() and "### Evaluation" not in card.read_text()
    assert (tiny_stage1 / "old-card").read_text() == before
    assert not [name for name in os.listdir(tiny_stage1) if name.startswith(".")]
