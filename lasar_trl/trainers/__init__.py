"""The trainers of the three stages and their configs (TRL subclasses)."""

from .lasar_grpo_config import LasarGRPOConfig
from .lasar_grpo_trainer import LasarGRPOTrainer
from .lasar_sft_config import LasarSFTConfig
from .lasar_sft_trainer import LasarSFTTrainer
from .sft import SidSFTTrainer

__all__ = ["LasarGRPOConfig", "LasarGRPOTrainer", "LasarSFTConfig", "LasarSFTTrainer", "SidSFTTrainer"]
