"""Bench: embed-labels throughput versus a bare model forward on the same texts, and padding.

Texts: the published descriptions of the paper's 448 training labels (``label_spaces.json``),
encoded with all-MiniLM-L6-v2 (``--model minilm``, offline) on the CPU. Figures, from this one run:

- encode throughput of the stage's encoder (:class:`uniseg_cli.text.encoders.TextEncoder`, tokenize +
  length-grouped batches + pooling) versus a bare forward (``tokenizer(batch, padding=True)`` then
  ``model(**batch)``) over the same texts in the same batch size, input order; target ≥ 0.9;
- the same against a bare forward over the stage's own length-sorted batches (pure overhead);
- the share of padded tokens in the stage's batches; target ≤ 15 %;
- the whole stage (model load + encode + features.h5 + manifest) for reference.

Each timing is the best of ``--repeats`` interleaved runs, in process CPU time (one torch thread by
default), which a shared, busy machine disturbs far less than wall time; wall times are printed too.

    .venv/bin/python bench/embed.py [--batch-size 16] [--repeats 3] [--threads 1] [--json]
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


def bare_forward(enc: TextEncoder, texts: list[str], bs: int, order: list[int] | None = None) -> tuple[float, int, int]:
    """Tokenize + forward + masked mean, batches of ``bs`` in ``order`` (default: input order)."""
    tok, model = enc.tokenizer, enc.model
    order = order or list(range(len(texts)))
    t0 = time.process_time()
    real = total = 0
    with torch.inference_mode():
        for i in range(0, len(texts), bs):
            b = tok([texts[j] for j in order[i : i + bs]], padding=True, truncation=True, max_length=enc.max_length, return_tensors="pt")
            real, total = real + int(b["attention_mask"].sum()), total + b["attention_mask"].numel()
            h = model(**b).last_hidden_state
            m = b["attention_mask"].unsqueeze(-1).float()
            _ = ((h * m).sum(1) / m.sum(1)).numpy()
    return time.process_time() - t0, real, total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    rows = paper_rows()
    texts = [r.description for r in rows]
    enc = TextEncoder(a.model, batch_size=a.batch_size, device="cpu")
    enc.encode(texts[:32])  # warm up
    bare_forward(enc, texts[:32], a.batch_size)
    t_stage, t_bare, t_sorted = [], [], []
    ids = enc.tokenize(texts)
    sorted_order = [i for b in enc.batches(ids) for i in b]
    for _ in range(a.repeats):
        enc.stats = type(enc.stats)()
        t0 = time.process_time()
        enc.encode(texts)
        t_stage.append(time.process_time() - t0)
        tb, real_b, total_b = bare_forward(enc, texts, a.batch_size)
        t_bare.append(tb)
        t_sorted.append(bare_forward(enc, texts, a.batch_size, sorted_order)[0])
    pad_share = enc.stats.pad_share
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with S.A.publish(root, D.KIND, {"bench": 1}, [], run_id="benchdescs00") as st:
            D.write_descriptions(st.dir / D.FILENAME, rows, run_id=st.run_id)
        ctx = S.StageContext(spec=S.get_stage("embed-labels"), inputs={"describe-labels": st.artifact}, datasets=[],
                             params=build_params(EL.Params, {"model": a.model, "batch_size": a.batch_size,
                                                             "device": "cpu"}), root=root)
        t0 = time.perf_counter()
        art, _ = S.execute(ctx)
        t_whole = time.perf_counter() - t0
        feats, _ = EL.read_features(art)
    ratio = min(t_bare) / min(t_stage)
    ratio_sorted = min(t_sorted) / min(t_stage)
    res = {"texts": len(texts), "model": enc.ref.model_id, "batch_size": a.batch_size,
           "stage_encode_s": round(min(t_stage), 3), "bare_forward_s": round(min(t_bare), 3),
           "throughput_ratio": round(ratio, 3), "target_ratio": 0.9,
           "bare_forward_sorted_s": round(min(t_sorted), 3), "throughput_ratio_vs_sorted": round(ratio_sorted, 3),
           "stage_texts_per_s": round(len(texts) / min(t_stage), 1),
           "pad_share": round(pad_share, 4), "bare_pad_share": round(1 - real_b / total_b, 4), "target_pad_share": 0.15,
           "whole_stage_s": round(t_whole, 2), "features": list(feats.shape)}
    if a.json:
        print(json.dumps(res))
        return
    print(f"{len(texts)} descriptions, {enc.ref.model_id}, batch {a.batch_size}, CPU, "
          f"{torch.get_num_threads()} threads; best of {a.repeats}, process CPU seconds")
    print(f"stage encode {min(t_stage):.2f} s ({res['stage_texts_per_s']} texts/s); bare forward {min(t_bare):.2f} s; "
          f"throughput ratio {ratio:.2f} (target >= 0.9) {'OK' if ratio >= 0.9 else 'MISSED'}")
    print(f"bare forward on the stage's own length-sorted batches {min(t_sorted):.2f} s: ratio {ratio_sorted:.2f} "
          f"(the stage's own overhead; {'OK' if ratio_sorted >= 0.9 else 'MISSED'} against 0.9)")
    print(f"padded tokens: stage {100 * pad_share:.1f}% (target <= 15%) {'OK' if pad_share <= 0.15 else 'MISSED'}; "
          f"bare forward in input order {100 * res['bare_pad_share']:.1f}%")
    print(f"whole stage (load + encode + write): {t_whole:.2f} s -> features {feats.shape}")


if __name__ == "__main__":
    main()
