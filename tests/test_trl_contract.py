"""The private TRL and transformers hooks our trainers override, pinned to the shapes we rely on.

No public extension point covers these in TRL 1.16 (see docs/training.md). When a release
changes one, these tests fail naming the method, before a training run fails in a subtler way.
"""

import ast
import inspect
import textwrap

import pytest
from transformers import Trainer
from trl import GRPOTrainer, SFTTrainer

from lasar_trl.trainers import LasarGRPOTrainer, LasarSFTTrainer, SidSFTTrainer

# (class, method, the leading parameters our override and its super() call use)
HOOKS = [
    (GRPOTrainer, "_generate_single_turn", ["self", "prompt_ids", "images", "multimodal_fields", "num_generations"]),
    (GRPOTrainer, "_generate", ["self", "prompts"]),
    (GRPOTrainer, "_calculate_rewards", ["self", "inputs", "prompts", "completions", "completion_ids_list"]),
    (GRPOTrainer, "_generate_and_score_completions", ["self", "inputs"]),
    (GRPOTrainer, "_get_per_token_logps_and_entropies", ["self", "model", "input_ids", "attention_mask"]),
    (GRPOTrainer, "_compute_loss", ["self", "model", "inputs"]),
    (GRPOTrainer, "_set_signature_columns_if_needed", ["self"]),
    (SFTTrainer, "_set_signature_columns_if_needed", ["self"]),
    (Trainer, "_save_optimizer_and_scheduler", ["self", "output_dir"]),
    (Trainer, "_load_optimizer_and_scheduler", ["self", "checkpoint"]),
    (Trainer, "_save", ["self", "output_dir", "state_dict"]),
    (Trainer, "_save_checkpoint", ["self", "model", "trial"]),
    (Trainer, "_load_from_checkpoint", ["self", "resume_from_checkpoint", "model"]),
    (Trainer, "_load_best_model", ["self"]),
]


@pytest.mark.parametrize(("base", "name", "leading"), HOOKS, ids=[f"{b.__name__}.{n}" for b, n, _ in HOOKS])
def test_overridden_hook_keeps_its_signature(base, name, leading):
    assert hasattr(base, name), f"{base.__name__}.{name} is gone: LASAR's override of it no longer runs"
    parameters = list(inspect.signature(getattr(base, name)).parameters)
    assert parameters[: len(leading)] == leading, (
        f"{base.__name__}.{name} changed its parameters to {parameters}; our override expects {leading} first"
    )


def test_every_private_override_is_pinned():
    """A new override of a private hook must be added to HOOKS (and so to this contract)."""
    pinned = {name for _, name, _ in HOOKS}
    bases = (GRPOTrainer, SFTTrainer, Trainer)
    for trainer in (LasarGRPOTrainer, LasarSFTTrainer, SidSFTTrainer):
        for klass in trainer.__mro__:
            if klass in bases or klass.__module__.split(".")[0] != "lasar_trl":
                continue
            for name in vars(klass):
                if name.startswith("_") and not name.startswith("__") and any(hasattr(b, name) for b in bases):
                    assert name in pinned, f"{klass.__name__}.{name} overrides a private TRL hook not pinned in HOOKS"


def test_generate_returns_extra_fields_sixth():
    """LasarGRPOTrainer._generate adds each rollout's SID log-prob and depth to `outputs[5]`,
    the extra fields TRL merges into the rows that reward functions see."""
    source = textwrap.dedent(inspect.getsource(GRPOTrainer._generate))
    returns = [node.value for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Return)]
    shapes = [
        [getattr(element, "id", None) for element in value.elts] for value in returns if isinstance(value, ast.Tuple)
    ]
    assert shapes and all(len(shape) > 5 and shape[5] == "extra_fields" for shape in shapes), (
        f"GRPOTrainer._generate no longer returns extra_fields at index 5: {shapes}"
    )


def writes_extra_fields_into_rows(source: str) -> bool:
    """Whether `source` has a loop over `enumerate(inputs)` that stores `extra_fields` items into each row."""
    for loop in ast.walk(ast.parse(source)):
        if isinstance(loop, ast.For) and ast.unparse(loop.iter) == "enumerate(inputs)":
            row = ast.unparse(loop.target.elts[1])
            stores = [node for node in ast.walk(loop) if isinstance(node, ast.Assign)]
            if "extra_fields.items()" in ast.unparse(loop) and any(
                ast.unparse(node.targets[0]).startswith(f"{row}[") for node in stores
            ):
                return True
    return False


def test_generate_and_score_completions_writes_the_extra_fields_into_the_rows():
    """LasarGRPOTrainer reads each rollout's depth back from the row dicts it passed to
    `_generate_and_score_completions`: TRL must write `_generate`'s extra fields into them."""
    source = textwrap.dedent(inspect.getsource(GRPOTrainer._generate_and_score_completions))
    assert writes_extra_fields_into_rows(source), (
        "GRPOTrainer._generate_and_score_completions no longer writes extra_fields into the rows of `inputs`"
    )


def test_the_row_write_check_tells_a_write_from_a_copy():
    loop = (
        "for i, inp in enumerate(inputs):\n    for key, values in extra_fields.items():\n        {}[key] = values[i]\n"
    )
    assert writes_extra_fields_into_rows(loop.format("inp"))
    assert not writes_extra_fields_into_rows(loop.format("copied"))
