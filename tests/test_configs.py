"""`check_learning_rates`: the one rule for learning rates, used on a recipe's command line and on a
config, so a negative rate, or a run where every rate is 0, is refused before any model loads."""

import pytest
from trl import SFTConfig

from lasar_trl.configs import RecipeParser, check_learning_rates
from lasar_trl.trainers import LasarGRPOConfig, LasarSFTConfig, SidSFTTrainer


@pytest.mark.parametrize(
    "options, flag",
    [
        ({"learning_rate": -1.0}, "--learning_rate must be >= 0, got -1.0"),
        ({"learning_rate": 1e-4, "policy_head_learning_rate": -1.0}, "--policy_head_learning_rate must be >= 0"),
        ({"learning_rate": "-1e-4"}, "--learning_rate must be >= 0, got -0.0001"),  # a yaml's 1e-4 is a string
        ({"learning_rate": 0.0}, "--learning_rate: every learning rate is 0"),
        ({"learning_rate": 0, "policy_head_learning_rate": 0.0}, "--learning_rate, --policy_head_learning_rate: every"),
    ],
)
def test_a_negative_rate_or_all_rates_at_zero_are_refused_naming_the_flags(options, flag):
    with pytest.raises(ValueError, match=flag):
        check_learning_rates(options)


def test_positive_and_unset_rates_and_other_fields_pass():
    check_learning_rates({"learning_rate": "1e-4", "policy_head_learning_rate": None, "lr_scheduler_type": "cosine"})
    check_learning_rates({"learning_rate": 0.0, "policy_head_learning_rate": 1e-3})  # the Policy Head alone
    check_learning_rates({"warmup_ratio": 0.0, "weight_decay": -1.0})  # not learning rates


@pytest.mark.parametrize("config_class", [LasarSFTConfig, LasarGRPOConfig])
def test_our_configs_refuse_a_rate_when_built(config_class, tmp_path):
    """TRL's own scripts build our configs without our parser: the config itself refuses."""
    with pytest.raises(ValueError, match="--learning_rate must be >= 0, got -2e-05"):
        config_class(
            output_dir=str(tmp_path),
            learning_rate=-2e-5,
            report_to="none",
            use_cpu=True,
            bf16=False,
            activation_checkpointing=False,
        )


def test_a_stage1_trainer_refuses_a_plain_sft_configs_rate_before_loading_the_model(tmp_path):
    """Stage 1 trains with TRL's own SFTConfig, which has no hook of ours: the trainer checks."""
    args = SFTConfig(output_dir=str(tmp_path), learning_rate=0.0, report_to="none", use_cpu=True, bf16=False)
    with pytest.raises(ValueError, match="--learning_rate: every learning rate is 0"):
        SidSFTTrainer(model=str(tmp_path / "never-loaded"), args=args)


def test_the_recipes_parser_refuses_the_policy_heads_rate_by_its_flag(tmp_path):
    with pytest.raises(ValueError, match="--policy_head_learning_rate must be >= 0, got -0.5"):
        RecipeParser(LasarSFTConfig).parse_args_and_config(
            ["--output_dir", str(tmp_path), "--policy_head_learning_rate", "-0.5", "--report_to", "none"]
        )
