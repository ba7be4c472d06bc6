"""The LLM client against a real local chat-completions server and the real openai client."""
import json
import socket
import time

import pytest

from tests.text.chat_server import ChatServer
from uniseg_cli.errors import ArtifactError, ServiceError, UsageError
from uniseg_cli.text import llm
from uniseg_cli.text.llm_cache import ResponseCache

ITEMS = [llm.LabelItem("drive", i, n) for i, n in enumerate(["road", "sidewalk", "car", "traffic_sign", "sky", "person"])]
PROMPTS = [it.prompt(llm.DEFAULT_PROMPT) for it in ITEMS]


@pytest.fixture
def cache(tmp_path):
    with ResponseCache(tmp_path / "cache") as c:
        yield c


def make(srv, cache=None, **kw):
    kw.setdefault("timeout", 5.0)
    kw.setdefault("backoff", 0.01)
    return llm.OpenAIDescriber("tiny-llm", base_url=srv.url, cache=cache, **kw)


def test_answers_are_cached_and_a_rerun_sends_nothing(cache):
    with ChatServer() as srv:
        d = make(srv, cache, concurrency=3)
        out = llm.openai_descriptions(ITEMS, PROMPTS, d)
        assert len(srv.requests) == len(ITEMS)
        assert d.stats.cache_hits == 0 and d.stats.requests == len(ITEMS)
        assert out[3].startswith("An image of traffic sign from the drive dataset. It includes")
        assert srv.requests[0]["temperature"] == 0.0 and srv.requests[0]["max_tokens"] == 200
        d2 = make(srv, cache)
        assert llm.openai_descriptions(ITEMS, PROMPTS, d2) == out
        assert len(srv.requests) == len(ITEMS)  # nothing new sent
        assert d2.stats.cache_hits == len(ITEMS) and d2.stats.requests == 0


def test_changed_prompt_asks_only_the_labels_it_changes(cache):
    with ChatServer() as srv:
        make(srv, cache).describe(PROMPTS)
        changed = list(PROMPTS)
        changed[2] = ITEMS[2].prompt(llm.DEFAULT_PROMPT + " Mention wheels.")
        make(srv, cache).describe(changed)
        assert len(srv.requests) == len(ITEMS) + 1
        assert srv.prompts()[-1] == changed[2]
        make(srv, cache, temperature=0.7).describe(PROMPTS[:1])  # sampling params are part of the key
        assert len(srv.requests) == len(ITEMS) + 2


def test_interrupted_run_resumes_with_only_the_missing_labels(cache):
    half = len(PROMPTS) // 2
    state = {"broken": True}
    # The first run dies after half the labels (the server starts rejecting requests).
    script = lambda n, r: ("status", 401) if state["broken"] and n >= half else ("ok", None)  # noqa: E731
    with ChatServer(script=script) as srv:
        with pytest.raises(ServiceError):
            make(srv, cache, concurrency=1).describe(PROMPTS)
        assert len(cache) == half
        state["broken"] = False
        sent = len(srv.requests)
        d = make(srv, cache, concurrency=4)
        out = d.describe(PROMPTS)
        assert len(srv.requests) - sent == len(PROMPTS) - half
        assert sorted(srv.prompts()[sent:]) == sorted(PROMPTS[half:])
        assert d.stats.cache_hits == half and all(out)


def test_429_then_success_honours_retry_after():
    with ChatServer(script=lambda n, r: ("status", 429, {"Retry-After": "0.4"}) if n == 0 else ("ok", "fine")) as srv:
        d = make(srv, backoff=0.0)
        t0 = time.monotonic()
        assert d.ask(PROMPTS[0]) == "fine"
        assert time.monotonic() - t0 >= 0.4
        assert d.stats.retries == 1 and len(srv.requests) == 2


def test_500s_are_retried_then_give_up_with_a_clear_error():
    with ChatServer(script=lambda n, r: ("status", 500) if n < 2 else ("ok", "fine")) as srv:
        d = make(srv)
        assert d.ask(PROMPTS[0]) == "fine" and d.stats.retries == 2
    with ChatServer(script=lambda n, r: ("status", 503)) as srv:
        d = make(srv, max_retries=2)
        with pytest.raises(ServiceError, match="after 3 attempts"):
            d.ask(PROMPTS[0])
        assert len(srv.requests) == 3


def test_a_hanging_server_times_out_and_is_retried():
    with ChatServer(script=lambda n, r: ("hang", 3.0) if n == 0 else ("ok", "fine")) as srv:
        d = make(srv, timeout=0.3)
        t0 = time.monotonic()
        assert d.ask(PROMPTS[0]) == "fine"
        assert time.monotonic() - t0 < 2.5
        assert d.stats.retries == 1


def test_empty_answers_are_retried_and_never_stored(cache):
    with ChatServer(script=lambda n, r: ("empty", None) if n == 0 else ("ok", None)) as srv:
        d = make(srv, cache)
        assert d.describe(PROMPTS[:1])[0].startswith("An image of road")
        assert d.stats.retries == 1 and len(cache) == 1
    with ChatServer(script=lambda n, r: ("empty", None)) as srv:
        with ResponseCache(cache.dir.parent / "other") as c2:
            with pytest.raises(ServiceError, match="empty or non-text"):
                make(srv, c2, max_retries=1).describe(PROMPTS[:1])
            assert len(c2) == 0


@pytest.mark.parametrize("case", ["bad-key", "unknown-model"])
def test_bad_key_or_model_fails_fast_before_the_list_is_spent(case, monkeypatch, cache):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong-0123")
    with ChatServer(api_key="sk-right" if case == "bad-key" else None) as srv:
        d = llm.OpenAIDescriber("tiny-llm" if case == "bad-key" else "gpt-nope", base_url=srv.url, cache=cache,
                                concurrency=4)
        with pytest.raises(ServiceError) as ei:
            d.describe(PROMPTS * 5)
        assert len(srv.requests) == 1  # the probe only
        if case == "bad-key":
            assert "rejected the API key" in ei.value.message and "OPENAI_API_KEY" in ei.value.hint
            assert srv.auth_headers[0] == "Bearer sk-wrong-0123"
        else:
            assert "'gpt-nope'" in ei.value.message and "404" in ei.value.message
        assert "sk-wrong" not in ei.value.message + (ei.value.hint or "")


def test_unreachable_server_fails_fast():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    d = llm.OpenAIDescriber("m", base_url=f"http://127.0.0.1:{port}/v1", timeout=2.0, backoff=0.01)
    t0 = time.monotonic()
    with pytest.raises(ServiceError, match="cannot reach"):
        d.describe(PROMPTS)
    assert time.monotonic() - t0 < 5


def test_concurrency_is_bounded_and_used():
    with ChatServer(latency=0.1) as srv:
        d = make(srv, concurrency=3)
        t0 = time.monotonic()
        d.describe([f"{p} #{i}" for i in range(3) for p in PROMPTS])  # 18 prompts
        wall = time.monotonic() - t0
        assert srv.max_in_flight == 3
        assert wall < 18 * 0.1 * 0.7  # the sequential bound is 1.8 s


def test_api_key_needed_for_the_public_api_only(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(ServiceError, match="OPENAI_API_KEY"):
        llm.OpenAIDescriber("gpt-4o-mini")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    assert llm.OpenAIDescriber("m").base_url == "http://127.0.0.1:9/v1"


def test_template_provider_is_deterministic_and_uses_known_descriptions():
    items = [llm.LabelItem("ds", 0, "car", "A road vehicle with four wheels; excludes trucks."),
             llm.LabelItem("ds", 1, "sky", "An image of sky from ds. Everything above the horizon."),
             llm.LabelItem("ds", 2, "traffic_light")]
    assert llm.template_descriptions(items) == [
        "An image of car from the ds dataset. A road vehicle with four wheels; excludes trucks.",
        "An image of sky from ds. Everything above the horizon.",
        "An image of traffic light from the ds dataset.",
    ]


def test_bad_prompt_template_names_the_placeholder():
    with pytest.raises(UsageError, match="prompt_template"):
        ITEMS[0].prompt("describe {colour}")


def test_file_provider_reads_the_reference_json_layout(tmp_path):
    path = tmp_path / "spaces.json"
    path.write_text(json.dumps({"cityscapes": {"classes": ["road", "sky"], "descriptions": [
        "An image of road from Cityscapes dataset. Paved.", "An image of sky from Cityscapes dataset. Air."]}}))
    items = [llm.LabelItem("Cityscapes", 1, "sky"), llm.LabelItem("cityscapes", 0, "road")]
    assert llm.file_descriptions(items, path) == ["An image of sky from Cityscapes dataset. Air.",
                                                  "An image of road from Cityscapes dataset. Paved."]


def test_file_provider_flat_csv_and_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = {"dataset": ["a", "a"], "label": ["car", "bus"], "description": ["Cars only.", "Buses only."]}
    (tmp_path / "d.csv").write_text("dataset,label,description\n" + "".join(
        f'{d},{l},"{t}"\n' for d, l, t in zip(*rows.values())))
    pq.write_table(pa.table(rows), tmp_path / "d.parquet")
    items = [llm.LabelItem("a", 0, "bus"), llm.LabelItem("a", 1, "car")]
    want = ["An image of bus from the a dataset. Buses only.", "An image of car from the a dataset. Cars only."]
    assert llm.file_descriptions(items, tmp_path / "d.csv") == want
    assert llm.file_descriptions(items, tmp_path / "d.parquet") == want


def test_file_missing_labels_names_them(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps([{"dataset": "a", "label": "car", "description": "Cars."}]))
    items = [llm.LabelItem("a", 0, "car"), llm.LabelItem("a", 1, "truck"), llm.LabelItem("b", 0, "tree")]
    with pytest.raises(ArtifactError) as ei:
        llm.file_descriptions(items, path)
    msg = ei.value.message
    assert str(path) in msg and "2 of 3" in msg and "a/truck" in msg and "b/tree" in msg
    assert "datasets not in the file: b" in msg
    with pytest.raises(ArtifactError, match="does not exist"):
        llm.file_descriptions(items, tmp_path / "nope.json")


def test_progress_reports_done_hits_and_retries(cache):
    seen = []
    with ChatServer(script=lambda n, r: ("status", 429, {"Retry-After": "0"}) if n == 2 else ("ok", None)) as srv:
        make(srv, cache).describe(PROMPTS[:2])
        d = make(srv, cache, concurrency=2)
        d.describe(PROMPTS, on_progress=lambda st, done: seen.append((done, st.cache_hits, st.retries)))
    dones = [s[0] for s in seen]
    assert dones == sorted(dones) and dones[0] == 2 and dones[-1] == len(PROMPTS)
    assert seen[-1][1] == 2 and seen[-1][2] == 1  # two cache hits, one retry (the 429)


def test_file_provider_reads_the_published_reference_descriptions():
    from pathlib import Path

    import uniseg_cli.data as data
    from uniseg_cli.data import labelspaces as L

    ref = Path(data.__file__).parent / "label_spaces.json"  # the published GPT descriptions (METHOD §2)
    items = [llm.LabelItem(n, i, c) for n in ("cityscapes", "ade20k") for i, c in enumerate(L.get_label_space(n).classes)]
    out = llm.file_descriptions(items, ref)
    assert len(out) == 19 + 150 and out[0].startswith("An image of a road from Cityscapes dataset.")
    with pytest.raises(ArtifactError, match="no description for 19 of 19 labels: kitti/road"):
        llm.file_descriptions([llm.LabelItem("kitti", i, c) for i, c in enumerate(L.get_label_space("kitti").classes)],
                              ref)
