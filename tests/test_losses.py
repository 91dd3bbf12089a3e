"""LASAR loss terms against values computed by hand."""

import math

import pytest
import torch

from lasar_trl.losses import alignment_loss, depth_loss, ema, reinforce_depth_loss, step_to_anchor, symmetric_kl

P = torch.log(torch.tensor([0.5, 0.5]))
Q = torch.log(torch.tensor([0.9, 0.1]))
# KL(p||q) = .5 ln(.5/.9) + .5 ln(.5/.1); KL(q||p) = .9 ln(.9/.5) + .1 ln(.1/.5)
SYM_PQ = 0.5 * ((0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(5)) + (0.9 * math.log(1.8) + 0.1 * math.log(0.2)))


def test_symmetric_kl_by_hand():
    assert SYM_PQ == pytest.approx(0.43944, abs=1e-5)
    assert symmetric_kl(P, Q).item() == pytest.approx(SYM_PQ, rel=1e-5)
    assert symmetric_kl(Q, P).item() == pytest.approx(SYM_PQ, rel=1e-5)  # symmetric
    assert symmetric_kl(Q, Q).item() == pytest.approx(0.0, abs=1e-7)
    # temperature 2: softmax(log q / 2) = sqrt(q) normalised -> [.75, .25]
    hot = 0.5 * ((0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(2)) + (0.75 * math.log(1.5) + 0.25 * math.log(0.5)))
    assert symmetric_kl(P, Q, temperature=2.0).item() == pytest.approx(hot, rel=1e-5)


def test_step_to_anchor_is_ceil_t_s_over_n():
    num_steps = torch.tensor([4, 2, 3, 0, 1])
    num_segments = torch.tensor([2, 5, 3, 4, 6])
    expected = [
        [0, 0, 1, 1],  # N=4, S=2: ceil(t/2) = 1, 1, 2, 2
        [2, 4, -1, -1],  # N=2, S=5: ceil(2.5) = 3, ceil(5) = 5
        [0, 1, 2, -1],  # N=S=3
        [-1, -1, -1, -1],  # N=0: no thoughts
        [5, -1, -1, -1],  # N=1 meets the last anchor
    ]
    assert step_to_anchor(num_steps, num_segments, 4).tolist() == expected


def test_alignment_loss_averages_real_steps_then_rows():
    latent = torch.stack([torch.stack([P, Q, P]), torch.stack([P, P, P]), torch.stack([Q, Q, Q])])  # (3, 3, 2)
    anchors = torch.stack([torch.stack([Q, Q, Q]), torch.stack([Q, P, P]), torch.stack([P, P, P])])
    step_mask = torch.tensor([[1, 1, 0], [1, 1, 1], [0, 0, 0]])  # row 2 has N = 0
    # row 0: (SYM + 0) / 2 (its third step is padding); row 1: (SYM + 0 + 0) / 3; row 2 ignored
    expected = (SYM_PQ / 2 + SYM_PQ / 3) / 2
    assert alignment_loss(latent, anchors, step_mask).item() == pytest.approx(expected, rel=1e-5)
    assert alignment_loss(latent, anchors, torch.zeros(3, 3)).item() == 0.0


def test_alignment_ablations_by_hand():
    latent = torch.tensor([[[1.0, 0.0]]])
    anchors = torch.tensor([[[0.0, 2.0]]])
    mask = torch.ones(1, 1)
    assert alignment_loss(latent, anchors, mask, kind="cosine").item() == pytest.approx(1.0)
    assert alignment_loss(latent, anchors, mask, kind="mse").item() == pytest.approx((1 + 4) / 2)
    with pytest.raises(ValueError, match="alignment kind"):
        alignment_loss(latent, anchors, mask, kind="l1")


def test_depth_loss_by_hand():
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, math.log(3.0)]])
    # min_depth 1: depth 2 -> class 1 (p = 3/4); depth 9 clips to class 1 too
    assert depth_loss(logits, torch.tensor([2, 9]), min_depth=1).item() == pytest.approx(-math.log(0.75), rel=1e-6)
    # depth 0 below min_depth clips to class 0 (p = 1/4)
    assert depth_loss(logits[:1], torch.tensor([0]), min_depth=1).item() == pytest.approx(math.log(4), rel=1e-6)


def test_reinforce_by_hand_and_its_gradient_prefers_rewarded_depths():
    logits = torch.zeros(2, requires_grad=True)  # pi over depths {1, 2}, uniform
    log_pi = torch.log_softmax(logits, dim=-1)
    entropy = -(log_pi.exp() * log_pi).sum().expand(2)
    depth = torch.tensor([1, 2])
    reward = torch.tensor([1.0, 0.0])
    loss = reinforce_depth_loss(
        log_pi[depth - 1], reward, 0.5, depth, depth_cost=0.1, entropy=entropy, entropy_coef=0.01
    )
    # advantages: 1 - .5 - .1 = .4 and 0 - .5 - .2 = -.7; log pi = ln .5 each; H = ln 2
    expected = (-(0.4 * math.log(0.5)) - (-0.7 * math.log(0.5))) / 2 - 0.01 * math.log(2)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert logits.grad[0] < 0 < logits.grad[1]  # a descent step raises p(depth 1), whose reward beat the baseline


def test_ema():
    assert ema(None, 2.0, 0.9) == 2.0
    assert ema(2.0, 1.0, 0.9) == pytest.approx(1.9)
