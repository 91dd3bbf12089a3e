import json
import os
import signal
import socket
import subprocess
import sys
import time
import traceback
import urllib.request

import pytest
from testing_utils import make_tiny_model
from transformers import AutoTokenizer, GenerationConfig

from lasar_trl.cot.teacher import HFTeacher, OpenAITeacher, generate_cached, rationale_request

REQUESTS = [
    rationale_request("Movie number 1\nMovie number 2"),
    "hi",
    rationale_request("Movie number 3\nA much longer title of a fourth movie\nMovie number 5"),
    "What comes next?",
]
SECRET = "sk-lasar-test-4f9c2e7d1b"


def test_rationale_request_fills_the_history():
    request = rationale_request("Toy Story (1995)\nHeat (1995)")
    assert "Toy Story (1995)\nHeat (1995)" in request and "{history}" not in request


def test_hf_teacher_batched_equals_one_by_one_and_ignores_the_checkpoint_config(smol_tokenizer):
    model = make_tiny_model(smol_tokenizer)
    teacher = HFTeacher(model, smol_tokenizer, max_new_tokens=8, batch_size=3)
    batched = teacher.generate(REQUESTS)
    assert all(batched) and len(batched) == len(REQUESTS)
    assert HFTeacher(model, smol_tokenizer, max_new_tokens=8, batch_size=1).generate(REQUESTS) == batched
    assert teacher.generate(REQUESTS) == batched

    # A hostile generation_config.json; suppress_tokens has no neutral value we could set.
    suppressed = smol_tokenizer(batched[0], add_special_tokens=False)["input_ids"][:2]
    hostile = GenerationConfig(num_beams=4, do_sample=True, max_new_tokens=1, suppress_tokens=suppressed)
    model.generation_config = hostile
    assert teacher.generate(REQUESTS) == batched
    assert model.generation_config is hostile  # put back after the call


def test_hf_teacher_without_chat_template_uses_raw_text(smol_tokenizer):
    model = make_tiny_model(smol_tokenizer)
    templated = HFTeacher(model, smol_tokenizer, max_new_tokens=6).generate(REQUESTS[:2])
    smol_tokenizer.chat_template = None
    raw = HFTeacher(model, smol_tokenizer, max_new_tokens=6)
    assert not raw.use_chat_template
    assert raw.generate(REQUESTS[:2]) != templated


@pytest.fixture(scope="module")
def served_model(smol_path, tmp_path_factory):
    """(base_url, model name, HFTeacher on the same weights): a tiny random model behind a
    real `transformers serve` on 127.0.0.1, killed with its process group at teardown."""
    pytest.importorskip("openai", reason="OpenAITeacher needs openai: pip install -e '.[dev]'")
    from transformers.utils.import_utils import is_serve_available

    if not is_serve_available():
        pytest.skip("transformers serve needs fastapi and uvicorn: pip install -e '.[dev]'")
    folder = tmp_path_factory.mktemp("served")
    tokenizer = AutoTokenizer.from_pretrained(smol_path)
    model = make_tiny_model(tokenizer)
    model.save_pretrained(folder / "model")
    tokenizer.save_pretrained(folder / "model")
    port = _free_port()
    log = open(folder / "serve.log", "wb")
    command = [sys.executable, "-m", "transformers.cli.transformers", "serve", str(folder / "model")]
    command += ["--host", "127.0.0.1", "--port", str(port), "--device", "cpu", "--log-level", "warning"]
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while not _healthy(base):
            if server.poll() is not None or time.monotonic() > deadline:
                log_tail = (folder / "serve.log").read_text()[-3000:]
                pytest.fail(f"transformers serve did not start:\n{log_tail}")
            time.sleep(0.2)
        yield f"{base}/v1", str(folder / "model"), HFTeacher(model, tokenizer, max_new_tokens=6)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _healthy(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/health", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.mark.slow
def test_openai_teacher_keeps_order_under_concurrency(served_model, monkeypatch):
    base_url, model_name, hf_teacher = served_model
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # a local server needs no key
    teacher = OpenAITeacher(base_url, model_name, concurrency=4, max_tokens=6, timeout=30)
    requests = REQUESTS + [f"Request number {i}" for i in range(4)]
    # Greedy on the same weights with the same chat template: the in-process teacher's
    # answer to each request is the server's, so any reordering shows.
    assert teacher.generate(requests) == hf_teacher.generate(requests)


def test_openai_teacher_never_shows_the_key(monkeypatch):
    pytest.importorskip("openai", reason="OpenAITeacher needs openai: pip install -e '.[dev]'")
    monkeypatch.setenv("LASAR_TEACHER_KEY", SECRET)
    base_url = f"http://127.0.0.1:{_free_port()}/v1"  # nothing listens there
    teacher = OpenAITeacher(base_url, "some-model", api_key_env="LASAR_TEACHER_KEY", timeout=2, max_retries=1)
    assert SECRET not in repr(teacher) and SECRET not in str(teacher) and SECRET not in teacher.identity
    with pytest.raises(RuntimeError, match="failed: APIConnectionError") as failure:
        teacher.generate(["hi"])
    assert base_url in str(failure.value)
    assert SECRET not in "".join(traceback.format_exception(failure.value))


@pytest.mark.slow
def test_openai_teacher_timeout_names_the_endpoint(served_model):
    base_url, model_name, _ = served_model
    teacher = OpenAITeacher(base_url, model_name, timeout=0.001, max_retries=0, max_tokens=6)
    with pytest.raises(RuntimeError, match="APITimeoutError") as failure:
        teacher.generate(["hi"])
    assert base_url in str(failure.value)


class CountingTeacher:
    """Answers `answer(request)`, records what it was asked, and crashes on call `crash_on_call`."""

    def __init__(self, identity: str = "counting", crash_on_call: int | None = None):
        self.identity = identity
        self.crash_on_call = crash_on_call
        self.calls = 0
        self.asked: list[str] = []

    def generate(self, requests: list[str]) -> list[str]:
        self.calls += 1
        if self.calls == self.crash_on_call:
            raise RuntimeError("teacher crashed")
        self.asked += requests
        return [answer(request) for request in requests]


def answer(request: str) -> str:
    return f"Rationale for {request}.\nStep two: ünïcode."


def test_cache_resumes_after_a_crash_and_asks_each_request_once(tmp_path):
    cache_file = tmp_path / "cot" / "teacher.jsonl"
    requests = [f"history {i}" for i in range(10)] + ["history 0", "history 3"]
    crashing = CountingTeacher(crash_on_call=3)
    with pytest.raises(RuntimeError, match="crashed"):
        generate_cached(crashing, requests, cache_file, chunk_size=3)
    assert crashing.asked == [f"history {i}" for i in range(6)]

    rerun = CountingTeacher()
    assert generate_cached(rerun, requests, cache_file, chunk_size=3) == [answer(r) for r in requests]
    assert rerun.asked == [f"history {i}" for i in range(6, 10)]
    again = CountingTeacher()
    assert generate_cached(again, requests, cache_file) == [answer(r) for r in requests]
    assert again.asked == []


def test_cache_ignores_a_truncated_last_line(tmp_path):
    cache_file = tmp_path / "teacher.jsonl"
    generate_cached(CountingTeacher(), ["a", "b"], cache_file)
    with open(cache_file, "a", encoding="utf-8") as handle:
        handle.write('{"key": "0123abc", "text": "cut sho')  # the process died mid-write

    teacher = CountingTeacher()
    assert generate_cached(teacher, ["a", "b", "c"], cache_file) == [answer("a"), answer("b"), answer("c")]
    assert teacher.asked == ["c"]
    assert [json.loads(line)["text"] for line in cache_file.read_text(encoding="utf-8").splitlines()] == [
        answer("a"),
        answer("b"),
        answer("c"),
    ]


def test_cache_is_not_shared_between_teacher_identities(tmp_path):
    cache_file = tmp_path / "teacher.jsonl"
    generate_cached(CountingTeacher("model-a"), ["a", "b"], cache_file)
    other = CountingTeacher("model-b")
    generate_cached(other, ["a", "b"], cache_file)
    assert other.asked == ["a", "b"]
