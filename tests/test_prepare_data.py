"""recipes/prepare_data.py: each stage's rows, as `datasets.load_dataset(DIR)` (TRL's `--dataset_name DIR`)
reads them, are the rows the library builds for that stage."""

import json

import datasets
import pytest
import torch
from testing_utils import make_tiny_model

from lasar_trl.configs import CotArguments
from lasar_trl.cot.dataset import latent_sft_dataset
from lasar_trl.cot.sources import rationales
from lasar_trl.data import load_dataset_spec, training_windows
from lasar_trl.modeling.checkpoint import MAX_HISTORY_KEY, load_recommender, save_recommender
from lasar_trl.modeling.lasar import LasarConfig, attach_lasar
from lasar_trl.sid.sid_map import SidMap
from lasar_trl.sid.tokenizer import BOT_TOKEN, add_sid_tokens
from lasar_trl.stages.prepare_data import PrepareDataArguments, run
from lasar_trl.tasks import PROMPT_TEMPLATE_KEY, recommendation_dataset, stage1_dataset


@pytest.fixture
def tiny(tiny_recbole_dir, tmp_path):
    """(spec, data, SID map saved under tmp_path/sids) of the tiny RecBole dataset."""
    spec = f"recbole:{tiny_recbole_dir}"
    data = load_dataset_spec(spec)
    items = sorted(data.catalog)
    codes = torch.randint(0, 4, (len(items), 3), generator=torch.Generator().manual_seed(0))
    sid_map = SidMap.from_codes(items, codes)
    sid_map.save(tmp_path / "sids")
    return spec, data, sid_map


@pytest.fixture
def stage1_checkpoint(tiny, smol_tokenizer, tmp_path):
    """A Stage-1 checkpoint folder of a tiny random model, trained (as it records) with the compact template."""
    _, _, sid_map = tiny
    model = make_tiny_model(smol_tokenizer)
    add_sid_tokens(model, smol_tokenizer, sid_map)
    setattr(model.config, PROMPT_TEMPLATE_KEY, "compact")
    save_recommender(model, smol_tokenizer, sid_map, str(tmp_path / "stage1"))
    return str(tmp_path / "stage1")


def load(folder, tmp_path) -> datasets.DatasetDict:
    """As TRL's scripts load `--dataset_name folder`."""
    return datasets.load_dataset(str(folder), cache_dir=str(tmp_path / "hf_cache"))


def test_stage1_rows_are_the_task_mix_and_the_validation_rows(tiny, tmp_path):
    spec, data, sid_map = tiny
    out = tmp_path / "out"
    args = PrepareDataArguments(
        stage=1, output_dir=str(out), dataset=spec, sid_map=str(tmp_path / "sids"), max_train_samples=40, seed=3
    )
    run(args)
    loaded = load(out, tmp_path)
    assert set(loaded) == {"train", "validation"}
    expected_train = stage1_dataset(data, sid_map, seed=3).shuffle(seed=3).select(range(40))
    assert loaded["train"].column_names == ["prompt", "completion"]
    assert loaded["train"].to_list() == expected_train.to_list()
    expected_validation = recommendation_dataset(data.splits["validation"], sid_map)
    assert loaded["validation"].to_list() == expected_validation.select_columns(["prompt", "completion"]).to_list()
    assert SidMap.load(out) == sid_map  # beside the data, for a trainer (and `--sid_map DIR`)


def test_stage1_builds_a_sid_map_when_none_is_given(tiny, tmp_path, monkeypatch):
    spec, _, sid_map = tiny
    built = []
    monkeypatch.setattr("lasar_trl.stages.stage1.build_sid_map", lambda data, **kw: built.append(kw) or sid_map)
    run(PrepareDataArguments(stage=1, output_dir=str(tmp_path / "out"), dataset=spec))
    assert built == [{"use_shipped": False}] and SidMap.load(tmp_path / "out") == sid_map


@pytest.mark.parametrize("base", ["folder", "scratch:tiny"])
def test_stage1_from_a_base_model_writes_it_with_the_sid_vocabulary_for_trls_sft_script(
    base, tiny, smol_tokenizer, tmp_path
):
    """TRL's sft.py gives the trainer only a model name: DIR/model is the base with the SIDs and their map."""
    spec, _, sid_map = tiny
    if base == "folder":
        base = str(tmp_path / "base")
        make_tiny_model(smol_tokenizer).save_pretrained(base)
        smol_tokenizer.save_pretrained(base)
    out = tmp_path / "out"
    options = dict(stage=1, output_dir=str(out), dataset=spec, sid_map=str(tmp_path / "sids"), max_train_samples=8)
    run(PrepareDataArguments(**options, model_name_or_path=base, prompt_template="compact", max_history=3))
    assert set(load(out, tmp_path)) == {"train", "validation"}  # the model folder is not read as data
    model, tokenizer, model_map = load_recommender(str(out / "model"))  # checks its tokenizer has the SIDs
    assert model_map == sid_map and BOT_TOKEN in tokenizer.get_vocab()
    assert model.get_input_embeddings().num_embeddings == len(tokenizer)
    assert getattr(model.config, PROMPT_TEMPLATE_KEY) == "compact"  # what stages 2 and 3 will prompt with
    assert getattr(model.config, MAX_HISTORY_KEY) == 3  # and how many items, for evaluation and Recommender
    if base.startswith("scratch:"):
        assert len(tokenizer) < len(smol_tokenizer)  # its own tokenizer, trained on the dataset's text
    else:  # the base's own rows are kept
        original = make_tiny_model(smol_tokenizer).get_input_embeddings().weight
        torch.testing.assert_close(model.get_input_embeddings().weight[: len(original)], original)


def test_stage1_from_a_recommender_checkpoint_writes_no_model_and_uses_its_sid_map(tiny, stage1_checkpoint, tmp_path):
    spec, _, sid_map = tiny
    out = tmp_path / "out"
    run(PrepareDataArguments(stage=1, output_dir=str(out), dataset=spec, model_name_or_path=stage1_checkpoint))
    assert SidMap.load(out) == sid_map and not (out / "model").exists()  # TRL's sft.py starts from the checkpoint


def expected_latent_rows(tiny, checkpoint: str, tmp_path, samples: int, seed: int) -> datasets.Dataset:
    """The library's Stage-2 rows for the checkpoint: windows, CoTs in its template, anchors."""
    _, data, sid_map = tiny
    model, tokenizer, _ = load_recommender(checkpoint, dtype="float32")
    windows = training_windows(data, samples, seed)
    cots = rationales(CotArguments(), data, sid_map, windows, str(tmp_path / "cot"), template="compact")
    return latent_sft_dataset(model, tokenizer, sid_map, windows, cots, str(tmp_path / "anchors"))


def assert_same_rows(loaded: datasets.Dataset, expected: datasets.Dataset) -> None:
    assert loaded.num_rows == expected.num_rows
    for column in loaded.column_names:
        if column == "anchors":
            for got, want in zip(loaded[column], expected[column]):
                torch.testing.assert_close(torch.tensor(got), torch.tensor(want))
        else:
            assert loaded[column] == expected[column], column


def test_stage2_and_3_rows_are_the_latent_rows_of_the_stage1_checkpoint(tiny, stage1_checkpoint, tmp_path):
    spec, _, sid_map = tiny
    expected = expected_latent_rows(tiny, stage1_checkpoint, tmp_path, samples=6, seed=1)
    assert all(prompt.endswith(BOT_TOKEN) and "interacted" not in prompt for prompt in expected["prompt"])  # compact
    common = dict(dataset=spec, model_name_or_path=stage1_checkpoint, max_train_samples=6, seed=1, device="cpu")
    for stage, columns, extra in [
        (2, ["prompt", "completion", "anchors"], {}),
        (3, ["prompt", "target", "anchors"], {}),
        (3, ["prompt", "target"], {"terminal_anchors": False}),
    ]:
        out = tmp_path / f"stage{stage}-{len(columns)}"
        run(PrepareDataArguments(stage=stage, output_dir=str(out), **common, **extra))
        loaded = load(out, tmp_path)
        assert list(loaded) == ["train"], stage  # stages 2 and 3 evaluate after training only
        assert loaded["train"].column_names == columns
        assert_same_rows(loaded["train"], expected.select_columns(columns))
        assert SidMap.load(out) == sid_map


def test_cot_options_reach_the_cot_source_and_a_cache_dir_is_kept(tiny, stage1_checkpoint, tmp_path):
    spec, data, sid_map = tiny
    windows = training_windows(data, 3, seed=0)
    file = tmp_path / "cots.jsonl"
    prompts = recommendation_dataset(windows, sid_map, "compact")["prompt"]
    file.write_text(
        "".join(json.dumps({"prompt": p, "cot": f"First {i}. Then more."}) + "\n" for i, p in enumerate(prompts))
    )
    cot_args = CotArguments(cot_source="file", cot_file=str(file), cot_cache_dir=str(tmp_path / "cache"))
    args = PrepareDataArguments(
        stage=2,
        output_dir=str(tmp_path / "out"),
        dataset=spec,
        model_name_or_path=stage1_checkpoint,
        max_train_samples=3,
        seed=0,
        device="cpu",
    )
    rows = run(args, cot_args)["train"]
    assert [len(anchors) for anchors in rows["anchors"]] == [2, 2, 2]  # two sentences each
    assert (tmp_path / "cache" / "anchors").is_dir()


@pytest.mark.parametrize("stage", [2, 3])
def test_stages_2_and_3_refuse_to_run_without_a_stage1_checkpoint(stage, tiny, tmp_path):
    out = str(tmp_path / "out")
    with pytest.raises(ValueError, match=f"--stage {stage} needs --model_name_or_path"):
        PrepareDataArguments(stage=stage, output_dir=out)
    with pytest.raises(FileNotFoundError, match="--model_name_or_path .* has no sid_map.json"):
        PrepareDataArguments(stage=stage, output_dir=out, model_name_or_path=str(tmp_path))
    with pytest.raises(ValueError, match="--model_name_or_path embedded:.* base model"):
        PrepareDataArguments(stage=stage, output_dir=out, model_name_or_path="embedded:SmolLM2-135M-Instruct")


def test_stage2_checkpoint_for_anchors_and_misplaced_options_are_refused(tiny, smol_tokenizer, tmp_path):
    _, _, sid_map = tiny
    model = make_tiny_model(smol_tokenizer)
    add_sid_tokens(model, smol_tokenizer, sid_map)
    attach_lasar(model, LasarConfig(hidden_size=model.config.hidden_size, n_max=2))
    save_recommender(model, smol_tokenizer, sid_map, str(tmp_path / "stage2"))
    out, stage2 = str(tmp_path / "out"), str(tmp_path / "stage2")
    with pytest.raises(ValueError, match="Stage-2 or 3 checkpoint: anchors"):
        PrepareDataArguments(stage=3, output_dir=out, model_name_or_path=stage2)
    PrepareDataArguments(stage=3, output_dir=out, model_name_or_path=stage2, terminal_anchors=False)  # no anchors
    with pytest.raises(ValueError, match="--prompt_template is Stage 1's"):
        PrepareDataArguments(
            stage=3, output_dir=out, model_name_or_path=stage2, terminal_anchors=False, prompt_template="compact"
        )
    with pytest.raises(ValueError, match="--terminal_anchors is Stage 3's"):
        PrepareDataArguments(stage=1, output_dir=out, terminal_anchors=False)
    with pytest.raises(ValueError, match="--cot_source"):
        run(PrepareDataArguments(stage=1, output_dir=out), CotArguments(segment_merge_threshold=0.5))
    assert not (tmp_path / "out").exists()


def test_existing_output_is_refused_without_overwrite_and_only_ours_is_replaced(tiny, tmp_path):
    spec, _, _ = tiny
    out = tmp_path / "out"
    options = dict(stage=1, output_dir=str(out), dataset=spec, sid_map=str(tmp_path / "sids"))
    run(PrepareDataArguments(**options, max_train_samples=5))
    before = {path: path.read_bytes() for path in out.rglob("*") if path.is_file()}
    with pytest.raises(FileExistsError, match="--output_dir .* already exists: pass --overwrite"):
        PrepareDataArguments(**options)
    assert {path: path.read_bytes() for path in out.rglob("*") if path.is_file()} == before

    run(PrepareDataArguments(**options, max_train_samples=7, overwrite=True))
    assert load(out, tmp_path)["train"].num_rows == 7

    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "model.safetensors").write_bytes(b"weights")
    with pytest.raises(FileExistsError, match=r"holds \['model.safetensors'\].*choose another folder"):
        PrepareDataArguments(**{**options, "output_dir": str(tmp_path / "ckpt")}, overwrite=True)
    assert (tmp_path / "ckpt" / "model.safetensors").read_bytes() == b"weights"
