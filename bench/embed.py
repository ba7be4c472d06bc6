"""Bench: embed-labels throughput versus a bare model forward on the same texts, and padding.

Texts: the published descriptions of the paper's 448 training labels (``label_spaces.json``).
Encoder: all-MiniLM-L6-v2 (``--model minilm``, offline, the default), any local model folder, or a
random-init Llama built here (``--random-init llama-2-7b``: the paper's encoder shape, 6.7 B
parameters, 4096-d; ``tiny-llama`` for a quick check), saved with a byte-level BPE tokenizer
trained on the texts (so its tokens per text differ from Llama-2's own tokenizer; tokens/s is printed
too). Figures, from this one run:

- encode throughput of the stage's encoder (:class:`uniseg_cli.text.encoders.TextEncoder`, tokenize +
  length-grouped batches + pooling) versus a bare forward (``tokenizer(batch, padding=True)`` then
  ``model(**batch)``) over the same texts in the same batch size, input order; target ≥ 0.9;
- the same against a bare forward over the stage's own length-sorted batches (pure overhead);
- the share of padded tokens in the stage's batches; target ≤ 15 %;
- the whole stage (model load + encode + features.h5 + manifest) for reference.

Each timing is the best of ``--repeats`` interleaved runs. On the CPU it is process CPU time (one
torch thread by default), which a shared, busy machine disturbs far less than wall time; on CUDA it is
wall time after synchronisation, and the peak GPU memory of the encode is printed.

    .venv/bin/python bench/embed.py [--model minilm | --random-init llama-2-7b] [--device cpu|cuda]
                                    [--dtype fp32|fp16|bf16] [--batch-size 16] [--repeats 3] [--threads 1] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from uniseg_cli import stages as S  # noqa: E402
from uniseg_cli.config import build_params  # noqa: E402
from uniseg_cli.data import labelspaces as L  # noqa: E402
from uniseg_cli.stages import describe_labels as D  # noqa: E402
from uniseg_cli.stages import embed_labels as EL  # noqa: E402
from uniseg_cli.text.encoders import TextEncoder  # noqa: E402

PAPER = ["cityscapes", "mapillary_vistas_v1.2", "sunrgbd", "bdd100k", "idd", "ade20k", "coco_panoptic_133"]


def paper_rows() -> list[D.DescriptionRow]:
    rows = []
    for name in PAPER:
        ls = L.get_label_space(name)
        for i, (c, d) in enumerate(zip(ls.classes, ls.descriptions)):
            rows.append(D.DescriptionRow(name, i, c, "", d, "file", "label_spaces.json"))
    return rows


RANDOM_INIT = {
    # llama-2-7b's shape (LlamaConfig's defaults): 32 layers, hidden 4096, MLP 11008, 32 heads, vocab 32000.
    "llama-2-7b": {},
    "tiny-llama": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2),
}


def build_random_llama(out: Path, shape: str, texts: list[str], device: str) -> Path:
    """A random-init Llama base model of ``shape`` (bf16) and a byte-level BPE tokenizer, saved to ``out``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaModel, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=4000, special_tokens=["<unk>", "<s>", "</s>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                       show_progress=False))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    cfg = LlamaConfig(bos_token_id=1, eos_token_id=2, **RANDOM_INIT[shape])
    torch.manual_seed(0)
    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            model = LlamaModel(cfg).eval()
    finally:
        torch.set_default_dtype(dtype)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    fast.save_pretrained(out)
    del model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return out


class Clock:
    """Process CPU time on the CPU; wall time after synchronisation on CUDA."""

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")

    def __call__(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
            return time.perf_counter()
        return time.process_time()


def bare_forward(enc: TextEncoder, texts: list[str], bs: int, clock: Clock,
                 order: list[int] | None = None) -> tuple[float, int, int]:
    """Tokenize + forward + masked mean, batches of ``bs`` in ``order`` (default: input order)."""
    tok, model = enc.tokenizer, enc.model
    order = order or list(range(len(texts)))
    t0 = clock()
    real = total = 0
    with torch.inference_mode():
        for i in range(0, len(texts), bs):
            b = tok([texts[j] for j in order[i : i + bs]], padding=True, truncation=True, max_length=enc.max_length,
                    return_tensors="pt").to(enc.device)
            real, total = real + int(b["attention_mask"].sum()), total + b["attention_mask"].numel()
            h = model(**b).last_hidden_state
            m = b["attention_mask"].unsqueeze(-1).to(h.dtype)
            _ = ((h * m).sum(1) / m.sum(1)).float().cpu().numpy()
    return clock() - t0, real, total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--random-init", choices=sorted(RANDOM_INIT),
                    help="build a random-init Llama of this shape in a temporary folder and bench it")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "fp16", "bf16"])
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    rows = paper_rows()
    texts = [r.description for r in rows]
    clock = Clock(a.device)
    with tempfile.TemporaryDirectory() as tmp:
        model, t_build = a.model, 0.0
        if a.random_init:
            t0 = time.perf_counter()
            model = str(build_random_llama(Path(tmp) / "model", a.random_init, texts, a.device))
            t_build = time.perf_counter() - t0
        t0 = time.perf_counter()
        enc = TextEncoder(model, batch_size=a.batch_size, device=a.device, dtype=a.dtype)
        t_load = time.perf_counter() - t0
        if enc.tokenizer.pad_token is None:  # the bare forward pads through the tokenizer
            enc.tokenizer.pad_token = enc.tokenizer.eos_token
        enc.encode(texts[:32])  # warm up
        bare_forward(enc, texts[:32], a.batch_size, clock)
        if clock.cuda:
            torch.cuda.reset_peak_memory_stats()
        t_stage, t_bare, t_sorted = [], [], []
        ids = enc.tokenize(texts)
        sorted_order = [i for b in enc.batches(ids) for i in b]
        for _ in range(a.repeats):
            enc.stats = type(enc.stats)()
            t0 = clock()
            enc.encode(texts)
            t_stage.append(clock() - t0)
            tb, real_b, total_b = bare_forward(enc, texts, a.batch_size, clock)
            t_bare.append(tb)
            t_sorted.append(bare_forward(enc, texts, a.batch_size, clock, sorted_order)[0])
        peak_gb = torch.cuda.max_memory_allocated() / 2**30 if clock.cuda else None
        pad_share = enc.stats.pad_share
        model_id, n_params = enc.ref.model_id, enc.n_params
        del enc
        if clock.cuda:
            torch.cuda.empty_cache()
        root = Path(tmp) / "artifacts"
        with S.A.publish(root, D.KIND, {"bench": 1}, [], run_id="benchdescs00") as st:
            D.write_descriptions(st.dir / D.FILENAME, rows, run_id=st.run_id)
        ctx = S.StageContext(spec=S.get_stage("embed-labels"), inputs={"describe-labels": st.artifact}, datasets=[],
                             params=build_params(EL.Params, {"model": model, "batch_size": a.batch_size,
                                                             "device": a.device, "dtype": a.dtype}), root=root)
        t0 = time.perf_counter()
        art, _ = S.execute(ctx)
        t_whole = time.perf_counter() - t0
        feats, _ = EL.read_features(art)
    tokens = sum(len(i) for i in ids)
    ratio = min(t_bare) / min(t_stage)
    ratio_sorted = min(t_sorted) / min(t_stage)
    res = {"texts": len(texts), "model": a.random_init or model_id, "parameters": n_params, "device": a.device,
           "dtype": a.dtype, "batch_size": a.batch_size, "tokens_per_text": round(tokens / len(texts), 1),
           "stage_encode_s": round(min(t_stage), 3), "bare_forward_s": round(min(t_bare), 3),
           "throughput_ratio": round(ratio, 3), "target_ratio": 0.9,
           "bare_forward_sorted_s": round(min(t_sorted), 3), "throughput_ratio_vs_sorted": round(ratio_sorted, 3),
           "stage_texts_per_s": round(len(texts) / min(t_stage), 1),
           "stage_tokens_per_s": round(tokens / min(t_stage), 1),
           "pad_share": round(pad_share, 4), "bare_pad_share": round(1 - real_b / total_b, 4), "target_pad_share": 0.15,
           "peak_gpu_gib": round(peak_gb, 2) if peak_gb is not None else None,
           "build_random_model_s": round(t_build, 2), "encoder_load_s": round(t_load, 2),
           "whole_stage_s": round(t_whole, 2), "features": list(feats.shape)}
    if a.json:
        print(json.dumps(res))
        return
    unit = "wall seconds after synchronisation" if clock.cuda else f"process CPU seconds, {torch.get_num_threads()} threads"
    print(f"{len(texts)} descriptions ({res['tokens_per_text']} tokens each on average), {res['model']} "
          f"({n_params / 1e6:.1f} M parameters, {a.dtype}), batch {a.batch_size}, {a.device}; best of {a.repeats}, {unit}")
    print(f"stage encode {min(t_stage):.2f} s ({res['stage_texts_per_s']} texts/s, {res['stage_tokens_per_s']} tokens/s); "
          f"bare forward {min(t_bare):.2f} s; throughput ratio {ratio:.2f} (target >= 0.9) {'OK' if ratio >= 0.9 else 'MISSED'}")
    print(f"bare forward on the stage's own length-sorted batches {min(t_sorted):.2f} s: ratio {ratio_sorted:.2f} "
          f"(the stage's own overhead; {'OK' if ratio_sorted >= 0.9 else 'MISSED'} against 0.9)")
    print(f"padded tokens: stage {100 * pad_share:.1f}% (target <= 15%) {'OK' if pad_share <= 0.15 else 'MISSED'}; "
          f"bare forward in input order {100 * res['bare_pad_share']:.1f}%")
    if peak_gb is not None:
        print(f"peak GPU memory during the encodes: {peak_gb:.2f} GiB")
    if a.random_init:
        print(f"random-init model built and saved in {t_build:.1f} s; encoder load {t_load:.1f} s")
    print(f"whole stage (load + encode + write): {t_whole:.2f} s -> features {feats.shape}")


if __name__ == "__main__":
    main()
