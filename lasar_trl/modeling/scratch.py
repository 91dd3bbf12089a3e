"""A compact Llama backbone trained from scratch, named `scratch:<preset>` like a hub model.

`build_scratch_backbone` returns an ordinary randomly initialised `LlamaForCausalLM` and a
byte-level BPE tokenizer trained on the dataset's own text. Stage 1 adds the SID tokens
and saves both as a plain HF folder, which every later stage, trainer, ZeRO and LoRA path
loads as it would a hub checkpoint. (LoRA on the random backbone itself makes no sense:
its adapter would name `scratch:<preset>` as a base no one can load.)

Parameters at a 2,500-token vocabulary, before the SID tokens (tied embeddings, so the
vocabulary counts once; each added token costs `hidden_size` more):

    preset   hidden  layers  heads/kv  mlp   parameters   of which embeddings
    tiny     64      2       4/2       256   0.28M        0.16M
    small    128     4       4/2       512   1.30M        0.32M
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedModel, PreTrainedTokenizerFast

from ..sid.sid_map import SID_RE
from ..sid.tokenizer import BOT_TOKEN, EOT_TOKEN

SCRATCH_PREFIX = "scratch:"
EOS_TOKEN = "<|endoftext|>"
# A pad token of its own rather than pad == eos (SmolLM2's way): the repo copes with both
# (padding is masked by attention masks and -100 labels, never found by its id), and a
# distinct pad means no code can mistake padding for an end of sequence or vice versa.
PAD_TOKEN = "<|pad|>"


@dataclass(frozen=True)
class ScratchPreset:
    """Shape of a from-scratch Llama; `tokenizer_vocab_size` is the BPE target before SID tokens."""

    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    tokenizer_vocab_size: int = 2500
    max_position_embeddings: int = 1024  # 50 items x ~5 tokens plus a text prompt


SCRATCH_PRESETS: dict[str, ScratchPreset] = {
    "tiny": ScratchPreset(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=256),
    "small": ScratchPreset(hidden_size=128, num_layers=4, num_heads=4, num_kv_heads=2, intermediate_size=512),
}

# Tokens `add_sid_tokens` (and the CoT baseline) add later as whole added tokens: BPE never
# sees them, so the tokenizer is trained on the text between them.
_ADDED_TOKEN_RE = re.compile("|".join([SID_RE.pattern, re.escape(BOT_TOKEN), re.escape(EOT_TOKEN)]))


def is_scratch(name_or_path: str | None) -> bool:
    """Whether `--model_name_or_path` asks for a from-scratch backbone rather than a checkpoint."""
    return name_or_path is not None and name_or_path.startswith(SCRATCH_PREFIX)


def scratch_preset(name_or_path: str) -> ScratchPreset:
    """The preset `scratch:<preset>` names; a ValueError listing the presets otherwise."""
    name = name_or_path.removeprefix(SCRATCH_PREFIX)
    if not is_scratch(name_or_path) or name not in SCRATCH_PRESETS:
        choices = ", ".join(SCRATCH_PREFIX + preset for preset in SCRATCH_PRESETS)
        raise ValueError(f"--model_name_or_path {name_or_path!r} is not a scratch backbone; choose one of: {choices}")
    return SCRATCH_PRESETS[name]


def train_tokenizer(texts: Iterable[str], vocab_size: int, model_max_length: int = 1024) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (GPT-2 style, like SmolLM2's) trained on `texts`.

    The 256 byte symbols are always in the vocabulary, so any text tokenizes without an
    unknown token. No BOS and no post-processor: `tokenizer(text)` is exactly the BPE
    tokens, so a prompt ending in `<bot>` still ends in it once tokenized. The vocabulary
    is smaller than `vocab_size` when the texts hold too few distinct pairs to merge."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN, PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,  # decode(encode(text)) == text
    )


def _text_pieces(texts: Iterable[str]) -> Iterator[str]:
    """The text between later-added tokens (SIDs, `<bot>`, `<eot>`): what BPE will actually see."""
    for text in texts:
        yield from (piece for piece in _ADDED_TOKEN_RE.split(text) if piece)


def build_scratch_backbone(
    name_or_path: str, texts: Iterable[str], seed: int, dtype: torch.dtype = torch.float32
) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """(random Llama, BPE tokenizer trained on `texts`) for `scratch:<preset>`; same texts and seed, same result.

    The weights are drawn from `seed` inside a forked RNG, so the caller's random state
    (data shuffling, dropout) is the same as with a pretrained backbone."""
    preset = scratch_preset(name_or_path)
    tokenizer = train_tokenizer(_text_pieces(texts), preset.tokenizer_vocab_size, preset.max_position_embeddings)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=preset.hidden_size,
        intermediate_size=preset.intermediate_size,
        num_hidden_layers=preset.num_layers,
        num_attention_heads=preset.num_heads,
        num_key_value_heads=preset.num_kv_heads,
        max_position_embeddings=preset.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config._name_or_path = name_or_path
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model, tokenizer
