"""Every recipe command that README and docs/ show parses: its flags exist, its values pass the
options' checks and its yaml loads. Training itself is run by the stage and main-job tests; here
each recipe runs as a script with its stage's `run` replaced by a recorder, so nothing trains.
A check that a named file exists (or that an output would be overwritten) may stop a command on
this machine: that passes when the error names one of the command's own flags."""

import importlib
import re
import runpy
import shlex
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
COMMAND = re.compile(r"^\s*(?:accelerate launch(?: --config_file \S+)?|python) (recipes/\w+\.py)(.*)$")
# placeholders the docs use in commands, and a value each that parses
PLACEHOLDERS = {"RUN": "outputs/lasar", "[FLAGS]": "", "FLAGS": "", "$km": "standard", "$cs": "256", " N ": " 2 "}
RECIPE_STAGE = {
    "sft_stage1": "stage1",
    "sft_latent": "stage2",
    "sft_explicit_cot": "explicit_cot",
    "grpo_lasar": "main_job",
    "build_sids": "build_sids",
    "evaluate": "evaluate",
    "merge_lora": "merge_lora",
    "recommend": "recommend",
    "prepare_data": "prepare_data",
}


def documented_commands() -> list[tuple[str, str, str]]:
    """(page, recipe, arguments) for every recipe command in a page, continuation lines joined."""
    found = []
    for page in PAGES:
        text = page.read_text().replace("\\\n", " ")
        for line in text.splitlines():
            match = COMMAND.match(line.split("#")[0])
            if match:
                arguments = f" {match.group(2)} "
                for placeholder, value in PLACEHOLDERS.items():
                    arguments = arguments.replace(placeholder, value)
                found.append((page.name, match.group(1), arguments.strip()))
    return found


COMMANDS = documented_commands()


def test_the_docs_show_every_recipe():
    shown = {Path(recipe).stem for _, recipe, _ in COMMANDS}
    assert {"grpo_lasar", "sft_stage1", "sft_latent", "build_sids", "evaluate", "merge_lora"} <= shown, shown


@pytest.mark.parametrize(("page", "recipe", "arguments"), COMMANDS, ids=[f"{p}:{r} {a}"[:90] for p, r, a in COMMANDS])
def test_documented_command_parses(page, recipe, arguments, monkeypatch):
    stage = importlib.import_module(f"lasar_trl.stages.{RECIPE_STAGE[Path(recipe).stem]}")
    calls = []
    monkeypatch.setattr(stage, "run", lambda *args, **kwargs: calls.append(args))
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "argv", [recipe, *shlex.split(arguments)])
    try:
        runpy.run_path(str(ROOT / recipe), run_name="__main__")
    except (FileNotFoundError, FileExistsError) as error:
        # the flags parsed and passed their checks; the files they name depend on the machine
        flag = str(error).split(" ", 1)[0]
        assert flag != "--config" and flag in arguments.split(), f"{page}: `{recipe} {arguments}`: {error}"
        return
    assert len(calls) == 1, f"{page}: `{recipe} {arguments}` did not reach {stage.__name__}.run"
