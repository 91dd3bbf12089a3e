"""LASAR's loss terms as pure tensor functions.

Shapes: B rows, T latent steps (padded to the batch maximum), H hidden (or vocab) size.
`step_mask` (B, T) is 1 on a row's real latent steps and 0 on its padding slots.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

ALIGN_KINDS = ("kl", "cosine", "mse")


def step_to_anchor(num_steps: torch.Tensor, num_segments: torch.Tensor, max_steps: int) -> torch.Tensor:
    """m(t) = ceil(t * S / N) for t = 1..max_steps, as 0-based anchor indices; -1 past a row's N.

    num_steps N (B,), num_segments S (B,) -> (B, max_steps). The last thought t = N always
    meets the last anchor S, whether N = S, N < S (segments grouped) or N > S (repeated).
    """
    t = torch.arange(1, max_steps + 1, device=num_steps.device)  # (T,)
    n, s = num_steps.unsqueeze(1), num_segments.unsqueeze(1)  # (B, 1)
    index = torch.div(t * s + n - 1, n.clamp(min=1), rounding_mode="floor") - 1  # ceil(tS/N) - 1
    return torch.where(t <= n, index, torch.full_like(index, -1))


def symmetric_kl(p_logits: torch.Tensor, q_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """1/2 [KL(p||q) + KL(q||p)] with p = softmax(p_logits / tau), q likewise; reduces the last dim."""
    log_p = F.log_softmax(p_logits.float() / temperature, dim=-1)
    log_q = F.log_softmax(q_logits.float() / temperature, dim=-1)
    return 0.5 * ((log_p.exp() * (log_p - log_q)).sum(-1) + (log_q.exp() * (log_q - log_p)).sum(-1))


def alignment_loss(
    latent: torch.Tensor,
    anchors: torch.Tensor,
    step_mask: torch.Tensor,
    kind: str = "kl",
    temperature: float = 1.0,
) -> torch.Tensor:
    """L_align: per-step distance between latent states and their anchors (B, T, H each),
    averaged over each row's real steps, then over the rows that have any (0 if none).

    kind: "kl" (symmetric KL of the softmax over the last dim: the paper's form), "cosine"
    (1 - cosine similarity) or "mse" (mean squared error over the last dim): ablations.
    """
    if kind == "kl":
        per_step = symmetric_kl(latent, anchors, temperature)
    elif kind == "cosine":
        per_step = 1 - F.cosine_similarity(latent.float(), anchors.float(), dim=-1)
    elif kind == "mse":
        per_step = (latent.float() - anchors.float()).square().mean(-1)
    else:
        raise ValueError(f"alignment kind must be one of {ALIGN_KINDS}, got {kind!r}")
    mask = step_mask.float()
    steps_per_row = mask.sum(-1)  # (B,)
    rows = steps_per_row > 0
    if not rows.any():
        return per_step.sum() * 0.0  # keeps the graph (and gradients of zero) intact
    per_row = (per_step * mask).sum(-1)[rows] / steps_per_row[rows]
    return per_row.mean()


def depth_loss(depth_logits: torch.Tensor, target_depth: torch.Tensor, min_depth: int) -> torch.Tensor:
    """L_depth = CE(PolicyHead(h_0), N_target). depth_logits (B, K): class k <-> depth min_depth + k;
    targets are clipped into [min_depth, min_depth + K - 1]."""
    num_classes = depth_logits.shape[-1]
    classes = (target_depth - min_depth).clamp(0, num_classes - 1)
    return F.cross_entropy(depth_logits.float(), classes)


def reinforce_depth_loss(
    depth_log_prob: torch.Tensor,
    reward: torch.Tensor,
    baseline: torch.Tensor | float,
    depth: torch.Tensor,
    depth_cost: float,
    entropy: torch.Tensor,
    entropy_coef: float,
) -> torch.Tensor:
    """L_pi = -(R_i - b - lambda * N_i) * log pi(N_i | h_0) - eta * H(pi), averaged over rollouts.

    reward R (raw total reward, not the advantage), depth N and depth_log_prob are (B,);
    entropy (B,) is H(pi(. | h_0)) of each rollout's prompt. The return is a constant.
    """
    advantage = (reward - baseline - depth_cost * depth.float()).detach()
    return (-(advantage * depth_log_prob) - entropy_coef * entropy).mean()


def ema(previous: float | None, value: float, decay: float) -> float:
    """Exponential moving average used as the REINFORCE baseline (first value seeds it)."""
    if previous is None or math.isnan(previous):
        return value
    return decay * previous + (1 - decay) * value
