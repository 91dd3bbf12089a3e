"""The stages as library code: the main job's single parse into typed stage configs (no training), the
choices its options declare, and the package's layering (read from the source, nothing imported)."""

import ast
from pathlib import Path

import pytest
import yaml
from trl import SFTConfig, TrlParser

from lasar_trl.configs import CotArguments
from lasar_trl.stages import main_job
from lasar_trl.trainers.lasar_sft_config import LasarSFTConfig

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = str(REPO / "recipes" / "grpo_lasar.yaml")


def job_configs(*flags: str) -> main_job.MainJobConfigs:
    return main_job.configure(*main_job.parse_args(list(flags), DEFAULT_CONFIG))


def read_yaml(name: str) -> dict:
    return yaml.safe_load((REPO / "recipes" / name).read_text())


def test_main_job_reads_the_stage_yamls_into_typed_configs(monkeypatch):
    monkeypatch.chdir(REPO)  # the default stage yamls are repository-relative, as summary.json records them
    configs = job_configs()
    job_yaml, stage1_yaml, stage2_yaml = (
        read_yaml(name) for name in ("grpo_lasar.yaml", "sft_stage1.yaml", "sft_latent.yaml")
    )
    assert (configs.job.stage1_config, configs.job.stage2_config) == (
        "recipes/sft_stage1.yaml",
        "recipes/sft_latent.yaml",
    )
    stage1, stage2 = configs.stage1, configs.stage2
    assert type(stage1.training_args) is SFTConfig and type(stage2.training_args) is LasarSFTConfig
    assert isinstance(stage2.cot_args, CotArguments) and stage2.cot_args.cot_source == stage2_yaml["cot_source"]
    # the yamls' own values ...
    assert stage1.training_args.num_train_epochs == stage1_yaml["num_train_epochs"]
    assert stage1.training_args.learning_rate == stage1_yaml["learning_rate"]
    assert stage1.model_args.model_name_or_path == stage1_yaml["model_name_or_path"]
    assert (stage1.script_args.prompt_template, stage1.script_args.stage1_layout) == ("compact", "sequences")
    assert stage2.training_args.n_max == stage2_yaml["n_max"]
    assert stage2.training_args.depth_mode == stage2_yaml["depth_mode"]
    assert stage2.script_args.max_train_samples == stage2_yaml["max_train_samples"]
    # ... with the job's data, seed, folders and no evaluation of their own; Stage 2 starts from Stage 1
    run_dir = Path(job_yaml["run_dir"])
    for stage, name in ((stage1, "stage1"), (stage2, "stage2")):
        assert Path(stage.training_args.output_dir) == run_dir / name
        assert stage.training_args.seed == job_yaml["seed"] and stage.training_args.report_to == []
        assert stage.script_args.max_history == job_yaml["max_history"]
        assert not stage.script_args.evaluate_after_training
    assert Path(stage2.model_args.model_name_or_path) == run_dir / "stage1"
    assert configs.training_args.max_steps == job_yaml["max_steps"]
    assert configs.job.max_rl_prompts == job_yaml["max_rl_prompts"]
    assert configs.job.reward_funcs == job_yaml["reward_funcs"] == ["ranking", "exact_match", "prefix_match"]
    assert configs.training_args.reward_weights == job_yaml["reward_weights"]


def test_rewards_are_named_next_to_their_weights_and_the_rl_prompts_have_their_own_name(monkeypatch):
    monkeypatch.chdir(REPO)
    configs = job_configs("--reward_funcs", "exact_match", "prefix_match", "--reward_weights", "2.0", "1.0")
    assert (configs.job.reward_funcs, configs.training_args.reward_weights) == (["exact_match", "prefix_match"], [2, 1])
    with pytest.raises(
        ValueError, match=r"reward_funcs: unknown reward \['exact'\], known: \['ranking', 'exact_match'"
    ):
        job_configs("--reward_funcs", "exact", "ranking", "prefix_match")
    with pytest.raises(ValueError, match=r"reward_weights \[1.0, 1.0, 1.0\] and reward_funcs \['exact_match'\]"):
        job_configs("--reward_funcs", "exact_match")
    with pytest.raises(ValueError, match="max_train_samples: the main job's RL prompts are max_rl_prompts"):
        job_configs("--max_train_samples", "10")


def test_smoke_shrinks_every_stage(monkeypatch):
    monkeypatch.chdir(REPO)
    configs = job_configs("--smoke", "true", "--seed", "7", "--report_to", "tensorboard")
    assert configs.stage1.script_args.max_train_samples == configs.stage2.script_args.max_train_samples == 16
    assert (configs.job.stage1_max_train_samples, configs.job.stage2_max_train_samples) == (16, 16)
    assert configs.training_args.max_steps == 2
    assert (configs.script_args.eval_max_samples, configs.script_args.eval_num_beams) == (16, 10)
    for stage in (configs.stage1, configs.stage2):
        assert stage.training_args.seed == 7 and stage.training_args.report_to == ["tensorboard"]
    # the stage yamls' other values are untouched
    assert configs.stage1.training_args.num_train_epochs == read_yaml("sft_stage1.yaml")["num_train_epochs"]


def test_a_named_yaml_replaces_the_default_and_a_checkpoint_skips_the_stage_yamls(monkeypatch):
    monkeypatch.chdir(REPO)
    smollm2 = job_configs("--config", "recipes/grpo_lasar_smollm2.yaml")
    assert smollm2.job.stage1_config == "recipes/sft_stage1_smollm2.yaml"
    assert (
        smollm2.stage1.script_args.max_train_samples == read_yaml("grpo_lasar_smollm2.yaml")["stage1_max_train_samples"]
    )
    from_checkpoint = job_configs("--model_name_or_path", "outputs/lasar/stage2", "--smoke", "true")
    assert from_checkpoint.stage1 is None and from_checkpoint.stage2 is None
    assert from_checkpoint.training_args.max_steps == 2


def test_choices_are_checked_on_the_command_line_and_in_a_yaml(tmp_path):
    parser = TrlParser(CotArguments)
    with pytest.raises(SystemExit):
        parser.parse_args_and_config(["--cot_source", "bogus"])
    config = tmp_path / "bad.yaml"
    config.write_text("cot_source: bogus\n")  # argparse does not check a default (a yaml's value) against choices
    with pytest.raises(ValueError, match="cot_source must be one of"):
        parser.parse_args_and_config(["--config", str(config)])


def lasar_imports(package: str) -> dict[str, set[str]]:
    """Each module of `lasar_trl.<package>` -> the lasar_trl modules it imports anywhere in its source
    (relative imports resolved)."""
    imports = {}
    for path in sorted((REPO / "lasar_trl" / package).rglob("*.py")):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        module, names = ".".join(parts), set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = parts[: len(parts) - node.level + (path.name == "__init__.py")] if node.level else []
                target = ".".join([*base, *([node.module] if node.module else [])])
                names |= {f"{target}.{alias.name}" for alias in node.names} if node.module is None else {target}
        imports[module] = {name for name in names if name.startswith("lasar_trl")}
    return imports


def imports_from(package: str, prefixes: tuple[str, ...]) -> dict[str, set[str]]:
    offending = {
        module: {name for name in names if name.startswith(prefixes)}
        for module, names in lasar_imports(package).items()
    }
    return {module: names for module, names in offending.items() if names}


def test_layering_data_knows_no_sids_and_training_imports_no_evaluation():
    assert lasar_imports("data")["lasar_trl.data.splits"] == {"lasar_trl.data.schema"}  # the resolver works
    data_imports = set().union(*lasar_imports("data").values())
    assert all(name.startswith(("lasar_trl.data", "lasar_trl.atomic")) for name in data_imports), data_imports
    assert not imports_from("sid", ("lasar_trl.tasks", "lasar_trl.cot", "lasar_trl.evaluation"))
    assert not imports_from("trainers", ("lasar_trl.evaluation", "lasar_trl.stages"))
    assert "lasar_trl.decoding" in lasar_imports("trainers")["lasar_trl.trainers.lasar_grpo_trainer"]
