"""The Policy Head: a distribution over latent depths read from h_0."""

from __future__ import annotations

import torch
from torch import nn


class PolicyHead(nn.Module):
    """2-layer MLP with tanh on h_0 -> logits over depths min_depth..n_max.

    Class k stands for depth `min_depth + k`. Logits are returned in float32 so that
    sampling and log-probs are stable when the backbone runs in bf16.
    """

    def __init__(self, hidden_size: int, min_depth: int = 1, n_max: int = 8, inner_size: int | None = None):
        super().__init__()
        if not 0 <= min_depth <= n_max:
            raise ValueError(f"need 0 <= min_depth <= n_max, got min_depth={min_depth}, n_max={n_max}")
        self.min_depth, self.n_max = min_depth, n_max
        inner_size = inner_size or hidden_size
        self.mlp = nn.Sequential(
            nn.Linear(hidden_size, inner_size), nn.Tanh(), nn.Linear(inner_size, n_max - min_depth + 1)
        )

    @property
    def num_depths(self) -> int:
        return self.n_max - self.min_depth + 1

    def forward(self, first_state: torch.Tensor) -> torch.Tensor:
        """first_state h_0 (B, H) -> depth logits (B, n_max - min_depth + 1), float32."""
        return self.mlp(first_state.to(self.mlp[0].weight.dtype)).float()

    def argmax_depth(self, first_state: torch.Tensor) -> torch.Tensor:
        """The most likely depth per row (B,): what inference uses."""
        return self(first_state).argmax(-1) + self.min_depth

    def sample_depth(
        self, first_state: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Depths N_i ~ pi(. | h_0) (B,) and their log-probs (B,): what RL rollouts use."""
        log_probs = torch.log_softmax(self(first_state), dim=-1)
        classes = torch.multinomial(log_probs.exp(), 1, generator=generator).squeeze(-1)
        return classes + self.min_depth, log_probs.gather(-1, classes.unsqueeze(-1)).squeeze(-1)
