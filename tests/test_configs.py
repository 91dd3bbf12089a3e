"""`check_learning_rates`: the one rule for learning rates, used on a recipe's command line and on a
config, so a non-positive rate is refused before any model loads."""

import pytest

from lasar_trl.configs import RecipeParser, check_learning_rates
from lasar_trl.trainers.lasar_sft_config import LasarSFTConfig


@pytest.mark.parametrize(
    "options, flag",
    [
        ({"learning_rate": -1.0}, "--learning_rate must be > 0, got -1.0"),
        ({"learning_rate": 1e-4, "policy_head_learning_rate": 0.0}, "--policy_head_learning_rate must be > 0, got 0.0"),
        ({"learning_rate": "-1e-4"}, "--learning_rate must be > 0, got -1e-4"),  # a yaml's 1e-4 is a string
    ],
)
def test_a_rate_at_or_below_zero_is_refused_naming_its_flag(options, flag):
    with pytest.raises(ValueError, match=flag):
        check_learning_rates(options)


def test_positive_and_unset_rates_and_other_fields_pass():
    check_learning_rates({"learning_rate": "1e-4", "policy_head_learning_rate": None, "lr_scheduler_type": "cosine"})
    check_learning_rates({"warmup_ratio": 0.0, "weight_decay": -1.0})  # not learning rates


def test_a_config_object_is_checked_through_vars(tmp_path):
    config = LasarSFTConfig(
        output_dir=str(tmp_path),
        learning_rate=-2e-5,
        report_to="none",
        use_cpu=True,
        bf16=False,
        activation_checkpointing=False,
    )
    with pytest.raises(ValueError, match="--learning_rate must be > 0"):
        check_learning_rates(vars(config))


def test_the_recipes_parser_refuses_the_policy_heads_rate_by_its_flag(tmp_path):
    with pytest.raises(ValueError, match="--policy_head_learning_rate must be > 0, got -0.5"):
        RecipeParser(LasarSFTConfig).parse_args_and_config(
            ["--output_dir", str(tmp_path), "--policy_head_learning_rate", "-0.5", "--report_to", "none"]
        )
