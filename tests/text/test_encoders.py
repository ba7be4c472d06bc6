"""Text encoders with a tiny random Llama built here and loaded by path, offline."""
import time

import numpy as np
import pytest
import torch

from tests.text.tiny_models import build_tiny_llama
from uniseg_cli.errors import ArtifactError, ServiceError, UsageError
from uniseg_cli.text import encoders as E

SHORT = "An image of car."
LONG = "An image of traffic sign from the drive dataset. Signs on poles; the pole itself is excluded, and so are cars."
TEXTS = [LONG, SHORT, "An image of sky from the city dataset.", "An image of road from the drive dataset. Paved lanes."]


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def enc(llama_dir):
    return E.TextEncoder(str(llama_dir), batch_size=4, device="cpu")


def hidden(enc, text):
    ids = torch.tensor([enc.tokenizer(text)["input_ids"]])
    with torch.inference_mode():
        return enc.model(input_ids=ids, output_hidden_states=True)


def test_loads_by_path_offline_with_feature_size_from_config(enc, llama_dir):
    assert enc.dim == 64 and enc.ref.model_id == str(llama_dir.resolve())
    assert enc.ref.revision.startswith("local:")
    assert enc.tokenizer.pad_token is None and enc.pad_id == enc.tokenizer.eos_token_id  # no [PAD] for mean
    f = enc.encode(TEXTS)
    assert f.shape == (4, 64) and f.dtype == np.float32 and np.isfinite(f).all()


def test_mean_pooling_matches_hand_computation_and_ignores_padding(enc):
    f = enc.encode(TEXTS)  # SHORT is padded up to LONG's length in the same batch
    hand = hidden(enc, SHORT).last_hidden_state[0].mean(0).numpy()
    np.testing.assert_allclose(f[1], hand, atol=1e-5)
    alone = enc.encode([SHORT])[0]  # no padding at all
    np.testing.assert_allclose(f[1], alone, atol=1e-5)
    assert not np.allclose(f[0], f[1])


def test_last_token_pooling(llama_dir):
    e = E.TextEncoder(str(llama_dir), pooling="last", device="cpu")
    f = e.encode([LONG, SHORT])
    np.testing.assert_allclose(f[1], hidden(e, SHORT).last_hidden_state[0, -1].numpy(), atol=1e-5)


def test_reference_pooling_averages_embeddings_plus_last_layer_over_max_length(llama_dir):
    e = E.TextEncoder(str(llama_dir), pooling="reference", max_length=40, device="cpu")
    assert e.tokenizer.pad_token == "[PAD]" and e.model.get_input_embeddings().weight.shape[0] == len(e.tokenizer)
    f = e.encode([SHORT, LONG])
    ids = e.tokenizer(SHORT)["input_ids"]
    x = torch.tensor([ids + [e.tokenizer.pad_token_id] * (40 - len(ids))])
    m = torch.tensor([[1] * len(ids) + [0] * (40 - len(ids))])
    with torch.inference_mode():
        hs = e.model(input_ids=x, attention_mask=m, output_hidden_states=True).hidden_states
    np.testing.assert_allclose(f[0], (hs[0][0] + hs[-1][0]).mean(0).numpy(), atol=1e-5)
    assert e.stats.real_tokens + e.stats.padded_tokens == 2 * 40  # always padded to max_length


def test_normalize_and_input_order(llama_dir, enc):
    e = E.TextEncoder(str(llama_dir), normalize=True, batch_size=2, device="cpu")
    f = e.encode(TEXTS)
    np.testing.assert_allclose(np.linalg.norm(f, axis=1), 1.0, atol=1e-5)
    raw = enc.encode(TEXTS)
    np.testing.assert_allclose(f, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-5)


def test_batches_are_grouped_by_length(llama_dir):
    e = E.TextEncoder(str(llama_dir), batch_size=2, device="cpu")
    texts = [SHORT, LONG, SHORT + " Small.", LONG + " More words here.", "Sky.", LONG[:60]]
    ids = e.tokenize(texts)
    lengths = [[len(ids[i]) for i in b] for b in e.batches(ids)]
    flat = [n for b in lengths for n in b]
    assert flat == sorted(flat)
    e.encode(texts)
    unsorted_pad = sum(2 * max(len(ids[i]) for i in pair) - sum(len(ids[i]) for i in pair)
                       for pair in ([0, 1], [2, 3], [4, 5]))
    assert e.stats.padded_tokens < unsorted_pad


def test_bf16_is_close_to_fp32(llama_dir, enc):
    e = E.TextEncoder(str(llama_dir), dtype="bf16", device="cpu")
    assert next(e.model.parameters()).dtype == torch.bfloat16
    a, b = e.encode(TEXTS), enc.encode(TEXTS)
    assert a.dtype == np.float32
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert (cos > 0.99).all()


def test_missing_model_path_names_it(tmp_path):
    with pytest.raises(UsageError, match="model path .*/nope/model does not exist"):
        E.TextEncoder(str(tmp_path / "nope" / "model"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtifactError, match="has no config.json"):
        E.TextEncoder(str(tmp_path / "empty"))


def test_uncached_hub_id_offline_fails_at_once(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    t0 = time.monotonic()
    with pytest.raises(ServiceError) as ei:
        E.TextEncoder("meta-llama/Llama-2-7b-hf")
    assert time.monotonic() - t0 < 3
    assert "'meta-llama/Llama-2-7b-hf'" in ei.value.message and "HF_HUB_OFFLINE=1" in ei.value.message
    assert "minilm" in ei.value.hint


def test_too_big_model_fails_before_loading(llama_dir, monkeypatch):
    monkeypatch.setattr(E, "available_memory", lambda device: (300_000, "test limit"))
    loaded = []
    monkeypatch.setattr("transformers.AutoModel.from_pretrained", lambda *a, **k: loaded.append(a))
    with pytest.raises(ServiceError, match=r"needs about .* MiB in fp32 on cpu, but only 0.29 MiB.*test limit") as ei:
        E.TextEncoder(str(llama_dir), device="cpu")
    assert loaded == [] and "--dtype bf16" in ei.value.hint


def test_check_fits_names_the_flag_that_helps():
    gib = 1024**3
    with pytest.raises(ServiceError) as ei:
        E.check_fits("meta-llama/Llama-2-7b-hf", 6_738_415_616, "fp32", "cpu", 22 * gib, "MemAvailable")
    assert "6.74 B parameters" in ei.value.message and "28.9 GiB" in ei.value.message
    assert "--dtype bf16 (about 14.4 GiB)" in ei.value.hint
    E.check_fits("x", 6_738_415_616, "bf16", "cpu", 22 * gib)  # fits: no error


def test_bad_options_and_empty_input(llama_dir, enc):
    with pytest.raises(UsageError, match="pooling"):
        E.TextEncoder(str(llama_dir), pooling="max")
    with pytest.raises(UsageError, match="dtype"):
        E.TextEncoder(str(llama_dir), dtype="int8")
    with pytest.raises(UsageError, match="empty"):
        enc.encode([])


@pytest.mark.slow
def test_minilm_alias_is_a_real_offline_encoder():
    e = E.TextEncoder("minilm", normalize=True, device="cpu")
    assert e.dim == 384 and e.ref.model_id == E.MINILM_ID
    road, street, sky = e.encode(["road", "street", "sky"])
    assert road @ street > road @ sky + 0.2


def test_gpt2_decoder_by_path(llama_dir, tmp_path):
    from transformers import AutoTokenizer, GPT2Config, GPT2Model

    tok = AutoTokenizer.from_pretrained(llama_dir)
    torch.manual_seed(0)
    GPT2Model(GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=1, n_head=2, n_positions=128)).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    e = E.TextEncoder(str(tmp_path), pooling="last", device="cpu")
    f = e.encode(TEXTS)
    assert e.dim == 32 and f.shape == (4, 32)
    np.testing.assert_allclose(f[1], hidden(e, SHORT).last_hidden_state[0, -1].numpy(), atol=1e-5)


def test_llama2_7b_config_is_refused_before_any_weight_is_read(tmp_path, monkeypatch):
    from transformers import LlamaConfig

    LlamaConfig().save_pretrained(tmp_path)  # llama-2-7b's shape; no weights, no tokenizer in the folder
    monkeypatch.setattr(E, "available_memory", lambda device: (16 * 1024**3, "MemAvailable (test)"))
    with pytest.raises(ServiceError) as ei:
        E.TextEncoder(str(tmp_path), device="cpu")
    # the base model without the LM head: 6.61 B of llama-2-7b's 6.74 B parameters
    assert "6.61 B parameters" in ei.value.message and "28.3 GiB in fp32" in ei.value.message
    assert "--dtype bf16 (about 14.2 GiB)" in ei.value.hint
