"""Label descriptions from an LLM, a template or a file.

The paper's description of a label is "An image of <label> from the <dataset> dataset." completed by
an LLM with a short definition of what the class includes and excludes (METHOD §2). Three providers
make such texts:

- ``openai``: any OpenAI-compatible chat-completions server through the official ``openai`` client
  (api.openai.com, vLLM, llama.cpp's server, Ollama, …). The server is ``base_url`` or
  ``$OPENAI_BASE_URL``; the key comes only from ``$OPENAI_API_KEY`` and is never written anywhere
  (not in params, manifests, the cache or logs). Answers are cached (:mod:`.llm_cache`); requests
  run ``concurrency`` at a time with retries (backoff honouring Retry-After) on 429, 5xx, timeouts
  and empty answers. A rejected key, an unknown model or an unreachable server stops the run at the
  first request, before the label list is spent.
- ``template``: offline and deterministic: the labels.yaml description when the dataset has one,
  else the sentence stem alone.
- ``file``: descriptions imported from JSON, CSV or Parquet (:mod:`.desc_files`).
"""
from __future__ import annotations

import dataclasses
import os
import random
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Callable, Sequence

from uniseg_cli.errors import ServiceError, UsageError
from uniseg_cli.text.llm_cache import ResponseCache, request_key

#: The paper's sentence stem; every description starts with it.
DESCRIPTION_STEM = "An image of {label} from the {dataset} dataset."
#: The default user prompt. Placeholders: {label}, {dataset}, {label_id}, {stem}.
DEFAULT_PROMPT = (
    'Complete the following description of the class "{label}" of the {dataset} semantic segmentation '
    "dataset with a short definition (one to three sentences) that says what the class includes and "
    "what it excludes. Reply with the finished description only, starting with the given sentence.\n\n{stem}"
)
SYSTEM_PROMPT = "You write precise, concise definitions of semantic segmentation classes."
PROVIDERS = ("template", "openai", "file")


@dataclasses.dataclass(frozen=True)
class LabelItem:
    """One label to describe. ``known`` is a description that came with the dataset (labels.yaml)."""

    dataset: str
    label_id: int
    label: str
    known: str | None = None

    @property
    def display(self) -> str:
        return self.label.replace("_", " ")

    def stem(self) -> str:
        return DESCRIPTION_STEM.format(label=self.display, dataset=self.dataset)

    def prompt(self, template: str) -> str:
        try:
            return template.format(label=self.display, dataset=self.dataset, label_id=self.label_id, stem=self.stem())
        except (KeyError, IndexError, ValueError) as e:
            raise UsageError(
                f"prompt_template: cannot fill it in ({type(e).__name__}: {e})",
                hint="use only the placeholders {label}, {dataset}, {label_id}, {stem}; write {{ and }} for braces.",
            )


def finish(item: LabelItem, answer: str) -> str:
    """Clean an answer into a description that starts with the paper's stem."""
    text = " ".join(answer.strip().split())
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    if not text.lower().startswith("an image"):
        text = f"{item.stem()} {text}"
    return text


@dataclasses.dataclass
class Stats:
    total: int = 0
    cache_hits: int = 0
    requests: int = 0  # HTTP requests sent, retries included
    retries: int = 0

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------------- offline


def template_descriptions(items: Sequence[LabelItem]) -> list[str]:
    """The labels.yaml description where present (prefixed with the stem if it lacks it), else the stem."""
    out = []
    for it in items:
        known = (it.known or "").strip()
        out.append(finish(it, known) if known else it.stem())
    return out


def file_descriptions(items: Sequence[LabelItem], path: str | Path) -> list[str]:
    from uniseg_cli.text.desc_files import read_description_file

    table = read_description_file(path)
    return [finish(it, t) for it, t in zip(items, table.require([(it.dataset, it.label) for it in items]))]


# --------------------------------------------------------------------------------------------- openai


class _Fatal(Exception):
    """An error that no retry can fix; stops every worker."""


def _retry_after(exc: BaseException) -> float | None:
    resp = getattr(exc, "response", None)
    headers = getattr(resp, "headers", None)
    if not headers:
        return None
    for name, div in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        v = headers.get(name)
        if v is None:
            continue
        try:
            return max(0.0, float(v) / div)
        except ValueError:
            import email.utils

            try:
                when = email.utils.parsedate_to_datetime(v)
                return max(0.0, when.timestamp() - time.time())
            except (TypeError, ValueError):
                return None
    return None


class OpenAIDescriber:
    """Ask an OpenAI-compatible chat server for one description per prompt, with cache and retries.

    Args:
        model: the served model name.
        base_url: server address (``None``: ``$OPENAI_BASE_URL``, else api.openai.com).
        temperature, max_tokens: sampling parameters (part of the cache key).
        concurrency: requests in flight at once.
        timeout: seconds per request before it counts as failed and is retried.
        max_retries: retries per prompt after the first attempt.
        cache: where answers are kept; ``None`` disables caching.
    """

    def __init__(self, model: str, *, base_url: str | None = None, temperature: float = 0.0, max_tokens: int = 200,
                 concurrency: int = 8, timeout: float = 60.0, max_retries: int = 5, cache: ResponseCache | None = None,
                 backoff: float = 0.5, max_backoff: float = 30.0, system_prompt: str = SYSTEM_PROMPT):
        import openai

        self.model, self.temperature, self.max_tokens = model, float(temperature), int(max_tokens)
        self.concurrency, self.timeout, self.max_retries = max(1, int(concurrency)), float(timeout), int(max_retries)
        self.backoff, self.max_backoff, self.system_prompt = backoff, max_backoff, system_prompt
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1").rstrip("/")
        key = os.environ.get("OPENAI_API_KEY")
        if not key:
            if "api.openai.com" in self.base_url:
                raise ServiceError(
                    "OPENAI_API_KEY is not set; api.openai.com needs a key",
                    hint="export OPENAI_API_KEY=... (it is read from the environment only and never stored), "
                    "or use --base-url for a local server, or --provider template.",
                )
            key = "no-key"  # local servers (vLLM, llama.cpp, Ollama) usually accept any key
        # Our own retry loop counts retries and honours Retry-After; the client's is switched off.
        self._client = openai.OpenAI(api_key=key, base_url=self.base_url, timeout=self.timeout, max_retries=0)
        self._openai = openai
        self.cache = cache
        self.stats = Stats()
        self._stop = threading.Event()
        self._lock = threading.Lock()

    # one request, with retries -------------------------------------------------------------------
    def _messages(self, prompt: str) -> list[dict]:
        return [{"role": "system", "content": self.system_prompt}, {"role": "user", "content": prompt}]

    def key(self, prompt: str) -> str:
        return request_key(provider="openai", server=self.base_url, model=self.model, messages=self._messages(prompt),
                           temperature=self.temperature, max_tokens=self.max_tokens)

    def _fatal_message(self, e: BaseException) -> ServiceError:
        o = self._openai
        status = getattr(e, "status_code", None)
        if isinstance(e, o.AuthenticationError):
            return ServiceError(f"the server {self.base_url} rejected the API key (HTTP 401)",
                                hint="set OPENAI_API_KEY to a valid key for this server.")
        if isinstance(e, o.PermissionDeniedError):
            return ServiceError(f"the server {self.base_url} refused access (HTTP 403) for model {self.model!r}",
                                hint="check that the key may use this model.")
        if isinstance(e, o.NotFoundError):
            return ServiceError(f"model {self.model!r} is unknown to {self.base_url} (HTTP 404)",
                                hint="check --model against the server's model list (GET /v1/models) and --base-url.")
        if isinstance(e, o.APIConnectionError):
            return ServiceError(f"cannot reach the LLM server {self.base_url}: {e}",
                                hint="check --base-url / OPENAI_BASE_URL and that the server is running.")
        return ServiceError(f"the server {self.base_url} refused the request (HTTP {status}): {e}",
                            hint="check --model, --max-tokens and --temperature for this server.")

    def _sleep(self, attempt: int, exc: BaseException | None) -> None:
        delay = _retry_after(exc) if exc is not None else None
        if delay is None:
            delay = min(self.max_backoff, self.backoff * 2**attempt) * (0.75 + 0.5 * random.random())
        self._stop.wait(min(delay, 120.0))

    def ask(self, prompt: str, *, probe: bool = False) -> str:
        """One answer text for ``prompt`` (not cached here); ServiceError when no retry helps."""
        o = self._openai
        last = "no attempt"
        for attempt in range(self.max_retries + 1):
            if self._stop.is_set():
                raise _Fatal("stopped")
            exc = None
            with self._lock:
                self.stats.requests += 1
            try:
                resp = self._client.chat.completions.create(
                    model=self.model, messages=self._messages(prompt),
                    temperature=self.temperature, max_tokens=self.max_tokens,
                )
                content = resp.choices[0].message.content if resp.choices else None
                if isinstance(content, str) and content.strip():
                    return content
                last = "an empty or non-text answer"
            except (o.RateLimitError, o.InternalServerError, o.APITimeoutError) as e:
                exc, last = e, f"{type(e).__name__}: {e}"
            except o.APIConnectionError as e:
                # Refused connections are immediate: on the first request they mean a wrong address.
                if probe and attempt >= 1:
                    raise self._fatal_message(e)
                exc, last = e, f"{type(e).__name__}: {e}"
            except o.APIStatusError as e:
                if 500 <= (e.status_code or 0) < 600:  # a 5xx without its own class
                    exc, last = e, f"HTTP {e.status_code}"
                else:
                    raise self._fatal_message(e)
            except o.OpenAIError as e:  # e.g. a response that is not chat-completions JSON
                exc, last = e, f"{type(e).__name__}: {e}"
            if attempt < self.max_retries:
                with self._lock:
                    self.stats.retries += 1
                self._sleep(attempt, exc)
        raise ServiceError(
            f"no usable answer from {self.base_url} (model {self.model!r}) after {self.max_retries + 1} attempts; "
            f"last: {last}",
            hint="re-run later (answers received so far are cached), or lower --concurrency / raise --timeout.",
        )

    # many prompts ---------------------------------------------------------------------------------
    def describe(self, prompts: Sequence[str], on_progress: Callable[[Stats, int], None] | None = None) -> list[str]:
        """Answers for ``prompts`` in order. Cached answers are reused; new ones are cached as they arrive."""
        self._stop.clear()
        keys = [self.key(p) for p in prompts]
        unique = dict(zip(keys, prompts))
        answers = dict(self.cache.get_many(unique)) if self.cache is not None else {}
        self.stats.total, self.stats.cache_hits = len(prompts), sum(k in answers for k in keys)
        done = [sum(k in answers for k in keys)]
        todo = [k for k in unique if k not in answers]
        counts = {k: keys.count(k) for k in todo}

        def one(k: str, probe: bool = False) -> None:
            text = self.ask(unique[k], probe=probe)
            if self.cache is not None:
                self.cache.put(k, text, self.model)
            with self._lock:
                answers[k] = text
                done[0] += counts[k]
            if on_progress:
                on_progress(self.stats, done[0])

        if on_progress:
            on_progress(self.stats, done[0])
        if todo:
            one(todo[0], probe=True)  # fail fast on a bad key, model or address
        rest = todo[1:]
        if rest:
            pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="llm")
            futures = [pool.submit(one, k) for k in rest]
            try:
                finished, _ = wait(futures, return_when=FIRST_EXCEPTION)
                errors = [f.exception() for f in finished if f.exception() is not None]
                if errors:
                    self._stop.set()
                    wait(futures)
                    real = [e for e in errors if not isinstance(e, _Fatal)]
                    raise real[0] if real else errors[0]
            except BaseException:
                # Ctrl-C or a fatal error: queued labels are dropped; requests in flight may still land
                # in the cache (useful on resume), but nobody waits for them.
                self._stop.set()
                pool.shutdown(wait=False, cancel_futures=True)
                raise
            pool.shutdown(wait=True)
        return [answers[k] for k in keys]


def openai_descriptions(items: Sequence[LabelItem], prompts: Sequence[str], describer: OpenAIDescriber) -> list[str]:
    """Descriptions from the server, with a rich progress bar (done / total, cache hits, retries)."""
    from rich.progress import TextColumn

    from uniseg_cli.ui import progress

    with progress(TextColumn("hits {task.fields[hits]} · retries {task.fields[retries]}")) as bar:
        task = bar.add_task(f"describe ({describer.model})", total=len(prompts), hits=0, retries=0)

        def tick(st: Stats, done: int) -> None:
            bar.update(task, completed=done, hits=st.cache_hits, retries=st.retries)

        answers = describer.describe(prompts, on_progress=tick)
    return [finish(it, a) for it, a in zip(items, answers)]
