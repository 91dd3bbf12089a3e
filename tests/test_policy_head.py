import pytest
import torch

from lasar_trl.modeling.policy_head import PolicyHead


def test_depth_classes_map_to_min_depth_and_n_max():
    torch.manual_seed(0)
    head = PolicyHead(hidden_size=6, min_depth=0, n_max=3)
    assert head.num_depths == 4
    with torch.no_grad():
        head.mlp[2].weight.zero_()
        head.mlp[2].bias.copy_(torch.tensor([0.0, 0.0, 5.0, 0.0]))  # depth 2 dominates
    states = torch.randn(5, 6)
    assert head(states).shape == (5, 4) and head(states).dtype == torch.float32
    assert head.argmax_depth(states).tolist() == [2] * 5
    depths, log_probs = head.sample_depth(states, generator=torch.Generator().manual_seed(0))
    assert ((depths >= 0) & (depths <= 3)).all()
    expected = torch.log_softmax(head(states), -1).gather(-1, depths.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(log_probs, expected)


def test_sampling_follows_the_distribution_and_is_seeded():
    head = PolicyHead(hidden_size=4, min_depth=1, n_max=2)
    with torch.no_grad():
        head.mlp[2].weight.zero_()
        head.mlp[2].bias.copy_(torch.log(torch.tensor([0.25, 0.75])))
    states = torch.zeros(4000, 4)
    first, _ = head.sample_depth(states, generator=torch.Generator().manual_seed(1))
    again, _ = head.sample_depth(states, generator=torch.Generator().manual_seed(1))
    assert torch.equal(first, again)
    assert (first == 2).float().mean().item() == pytest.approx(0.75, abs=0.03)


def test_invalid_range_is_refused():
    with pytest.raises(ValueError, match="min_depth"):
        PolicyHead(hidden_size=4, min_depth=3, n_max=2)
