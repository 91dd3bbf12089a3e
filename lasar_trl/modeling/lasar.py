"""The LASAR parts of a recommender: Policy Head and optional latent projection.

They are submodules of the Hugging Face causal LM, under the attribute `lasar`, so the
optimiser, ZeRO and PEFT see them like any other parameter. They are saved beside the HF
files, never inside `model.safetensors`: `lasar_head.safetensors` holds their weights and
`lasar_config.json` what is needed to rebuild them, so a checkpoint loads with a plain
`from_pretrained` plus `load_lasar`, without `trust_remote_code`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PreTrainedModel

from ..atomic import atomic_path, read_json_object, write_json_atomic
from .policy_head import PolicyHead

logger = logging.getLogger(__name__)

LASAR_ATTRIBUTE = "lasar"
LASAR_CONFIG_FILE = "lasar_config.json"
LASAR_HEAD_FILE = "lasar_head.safetensors"
DEPTH_MODES = ("cot", "fixed")
LATENT_PROJECTIONS = ("none", "linear", "rescale")


@dataclass
class LasarConfig:
    """How a checkpoint reasons: the depth range, how depth was chosen in training, and the
    map from a latent state to the next slot's input embedding.

    latent_projection: "none" feeds h_t back unchanged (the paper's form); "linear" is a
    learned H x H map initialised to the identity; "rescale" scales h_t to the mean norm of
    the token embeddings (`embedding_norm`), since final hidden states can be ~20x larger
    than the embeddings a decoder expects as input.
    """

    hidden_size: int
    n_max: int = 8
    min_depth: int = 1
    depth_mode: str = "cot"
    fixed_depth: int | None = None
    latent_projection: str = "none"
    embedding_norm: float | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.min_depth <= self.n_max:
            raise ValueError(f"need 0 <= min_depth <= n_max, got min_depth={self.min_depth}, n_max={self.n_max}")
        if self.depth_mode not in DEPTH_MODES:
            raise ValueError(f"depth_mode must be one of {DEPTH_MODES}, got {self.depth_mode!r}")
        if self.depth_mode == "fixed" and (self.fixed_depth is None or not 0 <= self.fixed_depth <= self.n_max):
            raise ValueError(f"depth_mode='fixed' needs 0 <= fixed_depth <= n_max={self.n_max}, got {self.fixed_depth}")
        if self.latent_projection not in LATENT_PROJECTIONS:
            raise ValueError(f"latent_projection must be one of {LATENT_PROJECTIONS}, got {self.latent_projection!r}")


class RescaleToNorm(nn.Module):
    """h -> h * norm / ||h||: keeps the direction, gives the input the embeddings' scale."""

    def __init__(self, norm: float):
        super().__init__()
        self.norm = norm

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden * (self.norm / hidden.norm(dim=-1, keepdim=True).clamp_min(1e-6))


class LasarModules(nn.Module):
    def __init__(self, config: LasarConfig):
        super().__init__()
        self.config = config
        self.policy_head = PolicyHead(config.hidden_size, config.min_depth, config.n_max)
        self.latent_projection: nn.Module | None = None
        if config.latent_projection == "linear":
            self.latent_projection = nn.Linear(config.hidden_size, config.hidden_size)
            nn.init.eye_(self.latent_projection.weight)
            nn.init.zeros_(self.latent_projection.bias)
        elif config.latent_projection == "rescale":
            self.latent_projection = RescaleToNorm(config.embedding_norm)

    def depth_policy(self, depth: int | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
        """The inference depth as a function of h_0: `depth` if given, else the checkpoint's
        fixed depth, else the Policy Head's argmax."""
        if depth is None and self.config.depth_mode == "fixed":
            depth = self.config.fixed_depth
        return self.policy_head.argmax_depth if depth is None else constant_depth(depth)


def constant_depth(depth: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """The same depth for every row, as a function of h_0 (B, H) like the Policy Head's."""
    return lambda first_state: torch.full((len(first_state),), depth, dtype=torch.long, device=first_state.device)


def mean_embedding_norm(model: PreTrainedModel) -> float:
    return float(model.get_input_embeddings().weight.detach().float().norm(dim=-1).mean())


def attach_lasar(model: PreTrainedModel, config: LasarConfig) -> LasarModules:
    """Create the LASAR parts on the model's device and dtype (float32 head: it is tiny)."""
    if config.latent_projection == "rescale" and config.embedding_norm is None:
        config.embedding_norm = mean_embedding_norm(model)
    weight = model.get_input_embeddings().weight
    modules = LasarModules(config).to(weight.device)
    if isinstance(modules.latent_projection, nn.Linear):  # it maps hidden states: keep their dtype
        modules.latent_projection.to(weight.dtype)
    model.add_module(LASAR_ATTRIBUTE, modules)
    return modules


def get_lasar(model: nn.Module) -> LasarModules | None:
    """The model's LASAR parts, also through PEFT and DDP wrappers; None for a plain LM."""
    direct = getattr(model, LASAR_ATTRIBUTE, None)
    if isinstance(direct, LasarModules):  # the HF model itself: no walk over its modules
        return direct
    for module in model.modules():
        if isinstance(module, LasarModules):
            return module
    return None


def is_lasar_key(key: str) -> bool:
    return key.startswith(f"{LASAR_ATTRIBUTE}.") or f".{LASAR_ATTRIBUTE}." in key


def split_lasar_state(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict, dict]:
    """(the HF model's own entries, the LASAR entries with keys relative to `LasarModules`)."""
    model_state, lasar_state = {}, {}
    for key, value in state_dict.items():
        if is_lasar_key(key):
            lasar_state[key.split(f"{LASAR_ATTRIBUTE}.", 1)[1]] = value
        else:
            model_state[key] = value
    return model_state, lasar_state


def save_lasar(lasar_state: Mapping[str, torch.Tensor], config: LasarConfig, directory: str) -> None:
    """Write `lasar_head.safetensors` then `lasar_config.json`, each atomically; the config
    goes last, so a folder with a config always has the weights that match it."""
    tensors = {key: value.detach().contiguous().cpu() for key, value in lasar_state.items()}
    with atomic_path(os.path.join(directory, LASAR_HEAD_FILE)) as staging:
        save_file(tensors, staging, metadata={"format": "pt"})
    write_json_atomic(os.path.join(directory, LASAR_CONFIG_FILE), asdict(config))


def has_lasar(directory: str) -> bool:
    return os.path.isfile(os.path.join(directory, LASAR_CONFIG_FILE))


def read_lasar_config(directory: str) -> LasarConfig:
    """The checkpoint's `lasar_config.json`; every error names the file."""
    file = os.path.join(directory, LASAR_CONFIG_FILE)
    try:
        return LasarConfig(**read_json_object(file))
    except TypeError as error:  # a key LasarConfig does not have, or one it needs missing
        raise ValueError(f"{file}: not a LASAR config ({error})") from None


def check_forced_depth(depth: int | None, n_max: int | None, source: str, flag: str = "depth") -> None:
    """A depth forced on a checkpoint must be one it can run: refused when negative or above its
    `n_max` (the Policy Head and the latent loop never went past it), warned about when the
    checkpoint was never trained with latent steps (`n_max` None: its forced steps are untrained).
    `source` names where `n_max` came from, `flag` the option the depth came from."""
    if depth is None:
        return
    if depth < 0:
        raise ValueError(f"{flag} must be >= 0 (0 = no latent steps), got {depth}")
    if n_max is None:
        if depth > 0:
            logger.warning(
                "%s %d: %s has no %s, so it was never trained with latent steps; the %d forced steps are untrained",
                flag,
                depth,
                source,
                LASAR_CONFIG_FILE,
                depth,
            )
        return
    if depth > n_max:
        raise ValueError(
            f"{flag} {depth} is above n_max={n_max} of {source}: the checkpoint never ran more latent steps; "
            f"pass a depth from 0 to {n_max}"
        )


def load_lasar(model: PreTrainedModel, directory: str) -> LasarModules:
    """Attach the LASAR parts saved in `directory` to `model` (or reload them into the
    parts it already has), refusing a head built for another hidden size."""
    config = read_lasar_config(directory)
    if config.hidden_size != model.config.hidden_size:
        raise ValueError(
            f"{directory}/{LASAR_CONFIG_FILE} is for hidden size {config.hidden_size}, "
            f"but the model has {model.config.hidden_size}"
        )
    modules = get_lasar(model)
    if modules is None or modules.config != config:
        modules = attach_lasar(model, config)
    file = os.path.join(directory, LASAR_HEAD_FILE)
    try:
        modules.load_state_dict(load_file(file, device=str(next(modules.parameters()).device)))
    except (SafetensorError, OSError, RuntimeError) as error:  # truncated, missing, or for other LASAR parts
        raise ValueError(
            f"{file}: cannot load the LASAR weights ({error}); copy the file again from the run that saved it"
        ) from None
    return modules
