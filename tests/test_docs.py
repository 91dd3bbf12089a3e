"""README and docs/ stay true to the tree: every relative link and every file they name exists."""

import re
from glob import glob
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
# a path into the repository's own top-level folders, as prose and commands write them
REPO_PATH = re.compile(r"(?<![\w/.-])((?:lasar_trl|recipes|benchmarks|docs|tests|accelerate_configs)/[\w./*-]*[\w*])")


def page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_relative_links_resolve(page):
    missing = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue  # a URL or an anchor on the same page
        if not (page.parent / target.split("#")[0]).exists():
            missing.append(target)
    assert not missing, f"{page_id(page)} links to missing files: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_named_repository_files_exist(page):
    missing = sorted({path for path in REPO_PATH.findall(page.read_text()) if not glob(str(ROOT / path))})
    assert not missing, f"{page_id(page)} names files that are not in the repository: {missing}"


def test_path_pattern_finds_paths_in_prose_and_commands():
    text = "see `recipes/sft_stage1.yaml`, run python benchmarks/report.py --x; not outputs/lasar/stage1/x.json"
    assert REPO_PATH.findall(text) == ["recipes/sft_stage1.yaml", "benchmarks/report.py"]


def test_readme_stays_short():
    words = len((ROOT / "README.md").read_text().split())
    assert words <= 1600, f"README.md has {words} words; depth belongs in docs/"
