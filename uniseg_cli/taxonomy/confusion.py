"""Cross-dataset confusion: the file format (``confusion.h5``) and a simulator for tests and benches.

``hist[a][b]`` (n_a × n_b, float64 pixel counts) is dataset a's ground truth against dataset b's
head argmax, for every ordered pair including a == b.

confusion.h5 (schema ``uniseg.confusion/1``)::

    /hist_<a>_<b>     float64 [n_a, n_b]  (a, b: dataset positions)
    root attrs: schema, kind, run_id, datasets (JSON list), classes (JSON {dataset: [names]}),
                split (JSON: where the held-out images came from), pixels (total counted)
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from uniseg_cli.errors import ArtifactError

SCHEMA = "uniseg.confusion/1"


def write_confusion(
    path: Path, hist: Sequence[Sequence[np.ndarray]], classes: dict[str, Sequence[str]], *, kind: str,
    run_id: str, split: dict | None = None, centroid_sums: Sequence[np.ndarray] | None = None,
    generic_shares: Sequence[Sequence[np.ndarray]] | None = None,
) -> None:
    """hist_<a>_<b> per ordered dataset pair; ``centroid_<a>`` (n_a, D): summed pixel embeddings per class;
    ``generic_<a>_<b>`` (n_a, n_b): the appearance evidence's label-transfer shares (evidence.py)."""
    import h5py

    names = list(classes)
    with h5py.File(path, "w") as f:
        for a in range(len(names)):
            for b in range(len(names)):
                f.create_dataset(f"hist_{a}_{b}", data=np.asarray(hist[a][b], dtype=np.float64))
                if generic_shares is not None:
                    f.create_dataset(f"generic_{a}_{b}", data=np.asarray(generic_shares[a][b], dtype=np.float64))
            if centroid_sums is not None:
                f.create_dataset(f"centroid_{a}", data=np.asarray(centroid_sums[a], dtype=np.float64))
        f.attrs["schema"] = SCHEMA
        f.attrs["kind"] = kind
        f.attrs["run_id"] = run_id
        f.attrs["datasets"] = json.dumps(names)
        f.attrs["classes"] = json.dumps({k: list(v) for k, v in classes.items()})
        f.attrs["split"] = json.dumps(split or {})
        f.attrs["pixels"] = float(sum(np.asarray(hist[a][a]).sum() for a in range(len(names))))


def read_confusion(path: Path) -> tuple[list[list[np.ndarray]], dict[str, list[str]], dict]:
    """(hist, classes {dataset: names} in dataset order, root attrs); exit 3 on a foreign/broken file."""
    import h5py

    path = Path(path)
    hint = "rebuild it with `uniseg estimate-nodes --force`."
    try:
        with h5py.File(path, "r") as f:
            attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
            if str(attrs.get("schema", "")).split("/")[0] != SCHEMA.split("/")[0]:
                raise ArtifactError(f"{path} has schema {attrs.get('schema')!r}, expected {SCHEMA}", hint=hint)
            names = json.loads(attrs["datasets"])
            classes = json.loads(attrs["classes"])
            hist = []
            for a, da in enumerate(names):
                row = []
                for b, db in enumerate(names):
                    h = np.asarray(f[f"hist_{a}_{b}"][...], dtype=np.float64)
                    if h.shape != (len(classes[da]), len(classes[db])):
                        raise ArtifactError(f"{path}: hist_{a}_{b} has shape {h.shape}, expected "
                                            f"{(len(classes[da]), len(classes[db]))}", hint=hint)
                    row.append(h)
                hist.append(row)
    except (OSError, KeyError, ValueError) as e:
        raise ArtifactError(f"{path} is not a readable confusion file: {e}", hint=hint) from e
    return hist, {n: list(classes[n]) for n in names}, attrs


# --------------------------------------------------------------------------------------------- simulator


def random_world(sizes: Sequence[int], num_universal: int, rng: np.random.Generator, coarse_frac: float = 0.1,
                 popularity: float = 1.2) -> list[np.ndarray]:
    """Random label spaces over hidden universal classes: bool (n_d, U) membership per dataset.

    Popular universal classes (Zipf-like weights) appear in many datasets, rare ones in few; a
    fraction ``coarse_frac`` of each dataset's labels also absorbs 1–2 extra universal classes
    (a coarse label). Every universal class lies in at most one label per dataset.
    """
    w = 1.0 / np.arange(1, num_universal + 1) ** popularity
    w = w / w.sum()
    out = []
    for n in sizes:
        if n > num_universal:
            raise ValueError(f"a dataset of {n} labels needs at least {n} universal classes")
        anchors = rng.choice(num_universal, size=n, replace=False, p=w)
        m = np.zeros((n, num_universal), dtype=bool)
        m[np.arange(n), anchors] = True
        free = np.setdiff1d(np.arange(num_universal), anchors)
        rng.shuffle(free)
        k = 0
        for i in np.nonzero(rng.random(n) < coarse_frac)[0]:
            extra = int(rng.integers(1, 3))
            if k + extra > len(free):
                break
            m[i, free[k:k + extra]] = True
            k += extra
        out.append(m)
    return out


def simulate_confusion(memberships: Sequence[np.ndarray], rng: np.random.Generator, acc_range=(0.45, 0.95), mass=None,
                       shift: float = 0.9, confusers: int = 3, pixels: float = 1e6) -> list[list[np.ndarray]]:
    """Expected pixel confusion of heads trained on the given label spaces.

    Head b predicts a pixel of universal class u as the label j covering u with probability
    acc_b(j) (times ``shift`` on another dataset's images), the rest spread over a few confusable
    labels; a class that b has no label for goes to a few random labels of b. Each dataset's
    pixels per universal class are log-normal.

    Args:
        memberships: bool (n_d, U) per dataset (``random_world``).
        mass: optional pixels per universal class, (U,) per dataset (default: log-normal).
    Returns:
        hist[a][b] float64 (n_a, n_b).
    """
    k = len(memberships)
    U = memberships[0].shape[1]
    acc = [rng.uniform(*acc_range, size=m.shape[0]) for m in memberships]
    # P[b][s]: (U, n_b) prediction distribution of head b on a pixel of universal class u; s = same dataset
    P = []
    for b, m in enumerate(memberships):
        n_b = m.shape[0]
        owner = np.full(U, -1)
        rows, cols = np.nonzero(m)
        owner[cols] = rows
        base = np.zeros((U, n_b))
        for u in range(U):
            conf = rng.choice(n_b, size=min(confusers, n_b), replace=False)
            base[u, conf] = rng.dirichlet(np.ones(len(conf)))
        base = 0.9 * base + 0.1 / n_b
        per = []
        for s in (1.0, shift):
            p = base.copy()
            hit = owner >= 0
            a_u = acc[b][owner[hit]] * s
            p[hit] *= (1.0 - a_u)[:, None]
            p[np.nonzero(hit)[0], owner[hit]] += a_u
            per.append(p)
        P.append(per)
    if mass is None:
        mass = [rng.lognormal(0.0, 1.0, size=U) * pixels / U for _ in range(k)]
    hist = []
    for a, ma in enumerate(memberships):
        row = []
        for b in range(k):
            pb = P[b][0 if a == b else 1]
            row.append((ma * mass[a][None, :]).astype(np.float64) @ pb)
        hist.append(row)
    return hist


def read_generic_shares(path: Path) -> list[list[np.ndarray]] | None:
    """The ``generic_<a>_<b>`` matrices of a confusion file, or None when it has none."""
    import h5py

    with h5py.File(Path(path), "r") as f:
        names = json.loads(f.attrs["datasets"])
        if "generic_0_0" not in f:
            return None
        return [[np.asarray(f[f"generic_{a}_{b}"][...], np.float64) for b in range(len(names))] for a in range(len(names))]
