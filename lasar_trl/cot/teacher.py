"""Rationale teachers: an LLM writes one chain-of-thought per sample.

The paper asks a strong LLM for a step-by-step rationale per training sample; the text
goes into the `cot` column and is segmented into anchors. A teacher is anything with an
`identity` string and `generate(requests) -> texts`, one text per request, in order:
`HFTeacher` runs any Hugging Face causal LM in-process, `OpenAITeacher` calls an
OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, `transformers serve`, ...).
`generate_cached` puts either behind a JSON-lines file, so a run of thousands of
requests survives a crash and a rerun only asks for what is missing; under several
processes each asks its share.

A request is the full user message. `rationale_request` builds the default one from a
history rendered as text; pass your own messages for another wording.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

from accelerate import PartialState
from tqdm.auto import tqdm
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

RATIONALE_INSTRUCTION = """\
A user interacted with these items, oldest first:
{history}

Explain step by step what the user is likely to interact with next. Write a short \
rationale of at most six sentences, one idea per sentence: what recurs in the history, \
how the user's focus has changed lately, and what kind of item would fit next. Do not \
name the next item or any item that is not in the history. Reply with the rationale only."""


def rationale_request(history_text: str) -> str:
    """The default teacher request for a history already rendered as text (titles or SIDs)."""
    return RATIONALE_INSTRUCTION.format(history=history_text)


class Teacher(Protocol):
    """One text per request, in order. `identity` names what makes two teachers' answers
    interchangeable (model and decoding settings, never a secret): `generate_cached` keys on it."""

    identity: str

    def generate(self, requests: list[str]) -> list[str]: ...


class HFTeacher:
    """Any Hugging Face causal LM, in batches of `batch_size` left-padded requests.

    Greedy when `temperature == 0`, else sampling from the full softmax at that temperature
    (seed torch for repeatable samples). Requests are wrapped in the tokenizer's chat template
    when it has one, else fed as raw text. Returns the new text only, stripped.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        max_new_tokens: int = 128,
        batch_size: int = 8,
        temperature: float = 0.0,
    ):
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.use_chat_template = tokenizer.chat_template is not None
        sampling = {"temperature": temperature, "top_k": 0, "top_p": 1.0} if temperature > 0 else {}
        pad_token_id = tokenizer.eos_token_id if tokenizer.pad_token_id is None else tokenizer.pad_token_id
        self.generation_config = GenerationConfig(
            max_new_tokens=max_new_tokens,
            min_new_tokens=0,
            do_sample=temperature > 0,
            num_beams=1,
            num_return_sequences=1,
            repetition_penalty=1.0,
            no_repeat_ngram_size=0,
            pad_token_id=pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            bos_token_id=tokenizer.bos_token_id,
            **sampling,
        )
        self.identity = (
            f"hf:{model.name_or_path}:chat_template={self.use_chat_template}:"
            f"max_new_tokens={max_new_tokens}:temperature={temperature}"
        )

    def __repr__(self) -> str:
        return f"HFTeacher({self.identity})"

    def _prompt(self, request: str) -> str:
        if not self.use_chat_template:
            return request
        messages = [{"role": "user", "content": request}]
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def generate(self, requests: list[str]) -> list[str]:
        prompts = [self._prompt(request) for request in requests]
        texts = []
        # generate() fills every field our config leaves None from model.generation_config,
        # and fields such as suppress_tokens or stop_strings have no neutral non-None value:
        # the checkpoint's config is set aside for the call so none of it applies.
        checkpoint_config = self.model.generation_config
        self.model.generation_config = self.generation_config
        try:
            for start in range(0, len(prompts), self.batch_size):
                batch = self.tokenizer(
                    prompts[start : start + self.batch_size],
                    return_tensors="pt",
                    padding=True,
                    padding_side="left",  # new tokens of every row start at the same column
                    add_special_tokens=not self.use_chat_template,  # the template has its own
                ).to(self.model.device)
                sequences = self.model.generate(**batch, generation_config=self.generation_config)
                new_tokens = sequences[:, batch["input_ids"].shape[1] :]  # (B, <= max_new_tokens)
                decoded = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
                texts += [text.strip() for text in decoded]
        finally:
            self.model.generation_config = checkpoint_config
        return texts


class OpenAITeacher:
    """An OpenAI-compatible chat-completions endpoint, `concurrency` requests in flight.

    The API key is read from the environment variable `api_key_env` (local servers need
    none; a placeholder is sent then) and is kept only inside the client: it is not in
    `repr`, `identity` or error messages. The `openai` client retries timeouts, connection
    errors, 429 and 5xx up to `max_retries` times with exponential backoff (honouring
    Retry-After); `timeout` is in seconds per try.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 60.0,
        max_retries: int = 3,
        concurrency: int = 4,
        max_tokens: int = 256,
        temperature: float = 0.0,
    ):
        try:
            import openai
        except ImportError as error:
            raise ImportError("OpenAITeacher needs the openai package: pip install openai") from error
        self.base_url = base_url
        self.model = model
        self.timeout = timeout
        self.max_retries = max_retries
        self.concurrency = concurrency
        self.max_tokens = max_tokens
        self.temperature = temperature
        self._client = openai.OpenAI(
            base_url=base_url,
            api_key=os.environ.get(api_key_env) or "no-key",
            timeout=timeout,
            max_retries=max_retries,
        )
        self.identity = f"openai:{base_url}:{model}:max_tokens={max_tokens}:temperature={temperature}"

    def __repr__(self) -> str:
        return (
            f"OpenAITeacher(base_url={self.base_url!r}, model={self.model!r}, max_tokens={self.max_tokens}, "
            f"temperature={self.temperature}, timeout={self.timeout}, concurrency={self.concurrency}, "
            f"max_retries={self.max_retries})"
        )

    def _complete(self, request: str) -> str:
        import openai  # optional dependency, checked in __init__

        try:
            response = self._client.chat.completions.create(
                model=self.model,
                messages=[{"role": "user", "content": request}],
                max_tokens=self.max_tokens,
                temperature=self.temperature,
            )
        except openai.APIError as error:
            # A server may echo the key in an error body, and the original exception's request
            # carries the Authorization header: redact the one, keep the other out of tracebacks.
            detail = str(error).replace(self._client.api_key, "***")
            raise RuntimeError(
                f"teacher endpoint {self.base_url} (model {self.model!r}) failed: {type(error).__name__}: "
                f"{detail} (timeout {self.timeout}s per try, up to {self.max_retries} retries)"
            ) from None
        return (response.choices[0].message.content or "").strip()

    def generate(self, requests: list[str]) -> list[str]:
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            futures = [pool.submit(self._complete, request) for request in requests]
            try:
                return [future.result() for future in futures]
            finally:
                pool.shutdown(cancel_futures=True)  # after a failure, send none of the rest


def _cache_key(identity: str, request: str) -> str:
    return hashlib.sha256(json.dumps([identity, request]).encode("utf-8")).hexdigest()


def _cache_files(cache_file: Path) -> list[Path]:
    """`cache_file` and the files other processes of a sharded run append to (`teacher.1.jsonl`, ...)."""
    writer_number = re.compile(re.escape(cache_file.stem) + r"\.\d+" + re.escape(cache_file.suffix))
    return [cache_file, *sorted(p for p in cache_file.parent.glob("*") if writer_number.fullmatch(p.name))]


def _load_cache(cache_file: Path, truncate: bool = True) -> dict[str, str]:
    """Key -> text. A last line cut short by a crash is skipped, and with `truncate` (only the
    file's own writer may) cut from the file too, so the next append starts on a fresh line;
    any other unreadable line is an error."""
    if not cache_file.exists():
        return {}
    data = cache_file.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    if truncate and len(complete) < len(data):
        with open(cache_file, "r+b") as handle:
            handle.truncate(len(complete))
    texts = {}
    for number, line in enumerate(complete.decode("utf-8").splitlines(), start=1):
        try:
            record = json.loads(line)
            texts[record["key"]] = record["text"]
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise ValueError(f"{cache_file}:{number} is not a teacher cache record ({error})") from error
    return texts


def _load_caches(cache_file: Path, own_file: Path) -> dict[str, str]:
    texts = {}
    for path in _cache_files(cache_file):
        texts.update(_load_cache(path, truncate=path == own_file))
    return texts


def generate_cached(
    teacher: Teacher,
    requests: Sequence[str],
    cache_file: str | os.PathLike,
    *,
    chunk_size: int = 64,
    show_progress: bool = False,
    state: PartialState | None = None,
) -> list[str]:
    """`teacher.generate(requests)`, resumable: answers are keyed by sha256 of
    (`teacher.identity`, request) and appended to the JSON-lines `cache_file` (flushed and
    fsynced) after every chunk of `chunk_size` requests. Only requests without an answer
    for this identity are asked, each distinct one once.

    With `state` (accelerate's `PartialState`, every process calling), process k asks the
    k-th of every `num_processes` distinct requests and appends to `teacher.k.jsonl` beside
    `cache_file` (process 0 to `cache_file` itself); then all wait and read every answer.
    """
    cache_file = Path(cache_file)
    writer, writers = (state.process_index, state.num_processes) if state is not None else (0, 1)
    own_file = cache_file if writer == 0 else cache_file.with_name(f"{cache_file.stem}.{writer}{cache_file.suffix}")
    keys = [_cache_key(teacher.identity, request) for request in requests]
    texts = _load_caches(cache_file, own_file)
    # A share fixed by position, not by what is missing: it cannot depend on when each process looked.
    share = list(dict(zip(keys, requests)).items())[writer::writers]
    missing = [(key, request) for key, request in share if key not in texts]
    if missing:
        own_file.parent.mkdir(parents=True, exist_ok=True)
        with (
            open(own_file, "a", encoding="utf-8") as handle,
            tqdm(total=len(missing), desc="teacher", unit="request", disable=not show_progress) as progress,
        ):
            for start in range(0, len(missing), chunk_size):
                chunk = missing[start : start + chunk_size]
                answers = teacher.generate([request for _, request in chunk])
                if len(answers) != len(chunk):
                    raise ValueError(f"{teacher.identity} answered {len(answers)} of {len(chunk)} requests")
                records = [{"key": key, "text": text} for (key, _), text in zip(chunk, answers)]
                handle.write("".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records))
                handle.flush()
                os.fsync(handle.fileno())
                texts.update((record["key"], record["text"]) for record in records)
                progress.update(len(chunk))
    if writers > 1:
        state.wait_for_everyone()
        texts = _load_caches(cache_file, own_file)
    return [texts[key] for key in keys]
