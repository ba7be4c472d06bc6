"""The synthetic world: hidden universal classes, several datasets that label them differently.

``make_world(out, seed, preset)`` renders every dataset of a preset in the generic format (train
and val splits) plus ``truth.parquet``, the ground-truth taxonomy (one unified node per universal
class that some dataset labels, weight 1), and ``world.json`` (what was written, for scripts).

The world is data (below): each universal class has an appearance (two colours mixed by a texture
at a class-specific orientation/frequency) and a domain; a scene generator per domain draws
regions with class-typical shapes (sky above a horizon, a road with lane dashes and crosswalks,
curbs along sidewalks, boxes for cars, ellipses for people; ceiling/wall/floor with furniture).
Each dataset labels what it sees with its own label space of real names, covering every conflict
the method exists for:

- one concept, different names: ``person`` (citydrive, homescan) = ``Pedestrian`` (vistadrive);
- a coarse label that is the union of finer ones: citydrive ``road`` = vistadrive ``Road`` +
  ``Lane Marking - General`` + ``Lane Marking - Crosswalk``;
- one name at different granularity: citydrive ``curb`` covers curbs *and* barriers, vistadrive
  ``Curb`` only curbs (``Barrier`` is its own class);
- classes only one dataset has (``Bicycle`` in vistadrive, ``terrain`` in citydrive, the indoor set);
- unlabeled regions: citydrive's ego-vehicle hood and the classes a dataset does not label are
  its ignore index;
- a per-dataset appearance shift (channel gain and offset).

The preset ``demo`` (default) adds ``camdrive``, a CamVid-like dataset with role ``unseen``; the preset
``quality`` (bench/quality.py's) is the demo world plus a second unseen dataset, the WildDash-like
``wildroad``, whose granularity differs from camdrive's. A preset's datasets render in its order, so
``quality``'s first four datasets are byte-identical to ``demo``'s (the anonymized codes differ). Same
seed, same preset → byte-identical files (PNG with fixed settings, sorted YAML, fixed Parquet).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from uniseg_cli.data.generic import write_labels_yaml
from uniseg_cli.data.synth_scenes import SCENES, render_appearance
from uniseg_cli.errors import OutputExistsError, UsageError

# ------------------------------------------------------------------------------------------ world

#: Universal (hidden) classes: name -> (domain, colour A, colour B, texture, texture params).
UNIVERSAL: dict[str, tuple] = {
    "road": ("drive", (72, 72, 78), (100, 100, 106), "noise", {"scale": 3}),
    "lane marking": ("drive", (236, 214, 50), (250, 238, 120), "plain", {}),
    "crosswalk": ("drive", (242, 242, 242), (38, 38, 44), "stripes", {"angle": 0, "period": 10}),
    "sidewalk": ("drive", (196, 172, 138), (150, 128, 100), "checker", {"period": 8}),
    "curb": ("drive", (205, 205, 212), (115, 115, 122), "stripes", {"angle": 90, "period": 4}),
    "barrier": ("drive", (232, 92, 28), (246, 246, 246), "stripes", {"angle": 45, "period": 12}),
    "building": ("drive", (150, 72, 56), (104, 46, 36), "grid", {"period": 7}),
    "vegetation": ("drive", (48, 134, 44), (18, 78, 24), "noise", {"scale": 4}),
    "terrain": ("drive", (156, 150, 66), (116, 110, 46), "dots", {"period": 6, "radius": 1.6}),
    "sky": ("drive", (112, 166, 232), (188, 214, 248), "gradient", {}),
    "car": ("drive", (28, 58, 176), (64, 104, 214), "plain", {}),
    "truck": ("drive", (18, 132, 128), (196, 204, 200), "stripes", {"angle": 0, "period": 16}),
    "bicycle": ("drive", (206, 40, 164), (88, 18, 72), "dots", {"period": 5, "radius": 1.8}),
    "person": ("both", (226, 156, 118), (150, 56, 60), "stripes", {"angle": 90, "period": 7}),
    "ego vehicle": ("drive", (14, 14, 18), (44, 44, 50), "plain", {}),
    "wall": ("indoor", (226, 214, 188), (206, 194, 166), "plain", {}),
    "floor": ("indoor", (164, 112, 60), (118, 78, 38), "stripes", {"angle": 90, "period": 11}),
    "ceiling": ("indoor", (246, 246, 250), (196, 196, 208), "grid", {"period": 12}),
    "bed": ("indoor", (122, 60, 164), (194, 152, 224), "checker", {"period": 10}),
    "chair": ("indoor", (204, 30, 42), (138, 18, 26), "noise", {"scale": 2}),
    "table": ("indoor", (98, 58, 28), (66, 38, 18), "stripes", {"angle": 135, "period": 5}),
    "window": ("indoor", (142, 222, 242), (58, 118, 150), "grid", {"period": 9}),
}

#: Dataset definitions: label name -> (universal classes it covers, a short real-world definition).
#: Universal classes of the dataset's domain that no label covers are its ignore index.
DATASETS: dict[str, dict] = {
    "citydrive": {
        "domain": "drive", "shift": ((1.04, 1.0, 0.95), (8, 3, -6)), "hood": True,
        "labels": {
            "road": (["road", "lane marking", "crosswalk"], "The paved part of a street that vehicles drive on."),
            "sidewalk": (["sidewalk"], "A paved path beside a road, for people walking."),
            "curb": (["curb", "barrier"], "The raised edge where a sidewalk meets the road."),
            "building": (["building"], "A structure with walls and a roof, such as a house or an office block."),
            "vegetation": (["vegetation"], "Trees, bushes and hedges growing along the street."),
            "terrain": (["terrain"], "Open ground with grass, soil or gravel beside the road."),
            "sky": (["sky"], "The open sky above the horizon."),
            "person": (["person"], "A human being standing or walking."),
            "car": (["car"], "A passenger automobile."),
            "truck": (["truck"], "A large motor vehicle for carrying goods."),
        },
    },
    "vistadrive": {
        "domain": "drive", "shift": ((0.95, 1.0, 1.05), (-6, 0, 8)), "hood": False,
        "labels": {
            "Road": (["road"], "The asphalt surface of a road, without its painted markings."),
            "Lane Marking - General": (["lane marking"], "Painted lines on a road that separate the lanes."),
            "Lane Marking - Crosswalk": (["crosswalk"], "Painted stripes across a road where pedestrians cross."),
            "Sidewalk": (["sidewalk"], "A paved path beside a road, for people walking."),
            "Curb": (["curb"], "The raised stone edge between a road and a sidewalk."),
            "Barrier": (["barrier"], "A temporary or fixed barrier that blocks or separates traffic."),
            "Building": (["building"], "A structure with walls and a roof."),
            "Vegetation": (["vegetation"], "Trees, bushes and other plants."),
            "Sky": (["sky"], "The sky."),
            "Pedestrian": (["person"], "A person walking on foot."),
            "Car": (["car"], "A passenger car."),
            "Truck": (["truck"], "A truck or lorry for transporting goods."),
            "Bicycle": (["bicycle"], "A two-wheeled vehicle driven by pedals."),
        },
    },
    "homescan": {
        "domain": "indoor", "shift": ((1.0, 0.97, 0.94), (4, 0, -4)), "hood": False,
        "labels": {
            "wall": (["wall"], "A vertical side of a room."),
            "floor": (["floor"], "The surface of a room that people walk on."),
            "ceiling": (["ceiling"], "The upper inside surface of a room."),
            "bed": (["bed"], "A piece of furniture for sleeping on."),
            "chair": (["chair"], "A seat for one person, with a back."),
            "table": (["table"], "A piece of furniture with a flat top and legs."),
            "window": (["window"], "An opening in a wall, fitted with glass, that lets in light."),
            "person": (["person"], "A human being."),
        },
    },
    "camdrive": {
        "domain": "drive", "shift": ((0.98, 1.03, 1.0), (0, 6, 2)), "hood": False,
        "labels": {
            "Sky": (["sky"], "The sky."),
            "Building": (["building"], "A building."),
            "Road": (["road", "lane marking", "crosswalk"], "The road surface, including its markings."),
            "Sidewalk": (["sidewalk", "curb"], "The pavement beside the road, including its edge."),
            "Tree": (["vegetation"], "Trees and other vegetation."),
            "Fence": (["barrier"], "A fence, railing or barrier beside the road."),
            "Car": (["car", "truck"], "A motor vehicle: car, van or truck."),
            "Pedestrian": (["person"], "A person walking."),
            "Bicyclist": (["bicycle"], "A bicycle and the person riding it."),
        },
    },
    "wildroad": {
        "domain": "drive", "shift": ((0.92, 0.96, 1.02), (10, 10, 10)), "hood": False,
        "labels": {
            "road": (["road", "crosswalk"], "The drivable road surface."),
            "road-marking": (["lane marking"], "Lines and symbols painted on the road."),
            "sidewalk": (["sidewalk", "curb"], "The walkway next to the road, with its curb."),
            "guard rail": (["barrier"], "A rail or barrier that keeps vehicles on the road."),
            "building": (["building"], "A building."),
            "vegetation": (["vegetation", "terrain"], "Plants and the natural ground they grow on."),
            "sky": (["sky"], "The sky."),
            "person": (["person"], "A person."),
            "vehicle": (["car", "truck"], "Any motor vehicle on the road."),
            "bicycle": (["bicycle"], "A bicycle."),
        },
    },
}

#: Presets: dataset name -> (role, height, width, n_train, n_val).
PRESETS: dict[str, dict[str, tuple]] = {
    "demo": {"citydrive": ("train", 96, 128, 48, 16), "vistadrive": ("train", 112, 112, 48, 16),
             "homescan": ("train", 96, 96, 48, 16), "camdrive": ("unseen", 96, 128, 16, 16)},
    "tiny": {"citydrive": ("train", 48, 64, 6, 3), "vistadrive": ("train", 48, 48, 6, 3),
             "homescan": ("train", 48, 48, 6, 3), "camdrive": ("unseen", 48, 64, 3, 3)},
    "bench": {"citydrive": ("train", 192, 256, 200, 50), "vistadrive": ("train", 224, 224, 200, 50),
              "homescan": ("train", 192, 192, 200, 50), "wildroad": ("train", 192, 256, 200, 50),
              "camdrive": ("unseen", 192, 256, 50, 50)},
}
# the demo world plus a second held-out dataset of another granularity (WildDash-like: markings and
# guard rails are classes of their own, curbs are sidewalk): bench/quality.py's Table 3
PRESETS["quality"] = {**PRESETS["demo"], "wildroad": ("unseen", 96, 128, 16, 16)}
DEFAULT_PRESET = "demo"
PRESET_ALIASES = {"default": "demo", "test": "tiny"}
WORLD_SCHEMA = "uniseg.synth-world/1"
IGNORE = 255

# ------------------------------------------------------------------------------------------ render


def _label_space(name: str) -> tuple[list[str], list[str], np.ndarray]:
    """(class names, descriptions, lut universal index -> train id or IGNORE) of a dataset."""
    d = DATASETS[name]
    names, descs = list(d["labels"]), [v[1] for v in d["labels"].values()]
    lut = np.full(256, IGNORE, np.uint8)
    uni = list(UNIVERSAL)
    for i, (members, _) in enumerate(d["labels"].values()):
        for m in members:
            lut[uni.index(m)] = i
    return names, descs, lut


def render_sample(name: str, height: int, width: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One (image uint8 (H, W, 3), universal class map uint8 (H, W)) of dataset ``name``."""
    d = DATASETS[name]
    uni = {n: i for i, n in enumerate(UNIVERSAL)}
    cmap = SCENES[d["domain"]](rng, height, width, uni, hood=d["hood"])
    img = render_appearance(cmap, list(UNIVERSAL.values()), rng, shift=d["shift"])
    return img, cmap


def _save_png(arr: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format="PNG", compress_level=6)


def _codes(seed: int, n: int, prefix: str) -> list[str]:
    perm = np.random.default_rng([seed, 1729]).permutation(n)
    letters = "abcdefghijklmnopqrstuvwxyz"
    return [f"{prefix}{int(k):02d}{letters[(int(k) * 7 + 3) % 26]}" for k in perm]


def make_world(out: str | Path, seed: int = 0, preset: str = DEFAULT_PRESET, anonymize: bool = False,
               force: bool = False) -> dict:
    """Render a preset into ``out``; return what was written.

    Args:
        out: output folder (created). Existing world files there need ``force``.
        seed: everything is a function of the seed (byte-identical files for the same seed).
        preset: a key of :data:`PRESETS` (``demo``, ``tiny``, ``bench``; ``default`` is ``demo``).
        anonymize: replace every class name and description (and the truth's names) by a
            meaningless code unique per (dataset, label), so only the images carry the relations.
        force: replace an existing world in ``out``.

    Returns:
        dict with ``seed``, ``preset``, ``anonymized``, ``truth`` (path), ``datasets``: a list of
        {name, role, domain, format, root, num_classes, train, val}.
    """
    from uniseg_cli.taxonomy.schema import Taxonomy, write_taxonomy

    preset = PRESET_ALIASES.get(preset, preset)
    if preset not in PRESETS:
        raise UsageError(f"unknown synth preset {preset!r}", hint=f"presets: {', '.join(PRESETS)}.")
    out = Path(out)
    plan = PRESETS[preset]
    targets = [out / n for n in plan] + [out / "truth.parquet", out / "world.json"]
    existing = [t for t in targets if t.exists()]
    if existing and not force:
        raise OutputExistsError(f"{out} already holds a synthetic world ({existing[0].name} exists)",
                                hint="pass --force to replace it, or choose another --out.")
    for t in existing:
        shutil.rmtree(t) if t.is_dir() else t.unlink()
    out.mkdir(parents=True, exist_ok=True)

    spaces = {n: _label_space(n) for n in plan}
    total = sum(len(s[0]) for s in spaces.values())
    codes = iter(_codes(seed, total, "c"))
    shown = {n: ([next(codes) for _ in s[0]] if anonymize else list(s[0])) for n, s in spaces.items()}
    info = {"schema": WORLD_SCHEMA, "seed": int(seed), "preset": preset, "anonymized": bool(anonymize),
            "truth": str(out / "truth.parquet"), "datasets": []}
    for di, (name, (role, h, w, n_train, n_val)) in enumerate(plan.items()):
        classes, descs, lut = spaces[name]
        desc = [f"Class {c} of dataset {name}." for c in shown[name]] if anonymize else descs
        root = out / name
        write_labels_yaml(root, name, shown[name], IGNORE, desc)
        for si, (split, n) in enumerate((("train", n_train), ("val", n_val))):
            for i in range(n):
                rng = np.random.default_rng([seed, di, si, i])
                img, cmap = render_sample(name, h, w, rng)
                _save_png(img, root / "images" / split / f"{name}_{split}_{i:05d}.png")
                _save_png(lut[cmap], root / "annotations" / split / f"{name}_{split}_{i:05d}.png")
        info["datasets"].append({"name": name, "role": role, "domain": DATASETS[name]["domain"], "format": "generic",
                                 "root": str(root), "num_classes": len(classes), "train": n_train, "val": n_val})

    # truth: one node per universal class that some dataset of the preset labels
    uni = list(UNIVERSAL)
    used = sorted({uni.index(m) for n in plan for members, _ in DATASETS[n]["labels"].values() for m in members})
    node_names = _codes(seed + 1, len(used), "u") if anonymize else [uni[u] for u in used]
    mappings = {}
    for name in plan:
        m = np.zeros((len(spaces[name][0]), len(used)), bool)
        for c, (members, _) in enumerate(DATASETS[name]["labels"].values()):
            for mem in members:
                m[c, used.index(uni.index(mem))] = True
        mappings[name] = m
    source = {"synth": {"seed": int(seed), "preset": preset, "anonymized": bool(anonymize)}}
    tax = Taxonomy.from_mappings(mappings, datasets={n: shown[n] for n in plan},
                                 names=dict(enumerate(node_names)), sources=source,
                                 kind="synthetic-truth", run_id=f"synth-{preset}-{seed}{'-anon' if anonymize else ''}")
    write_taxonomy(tax, out / "truth.parquet")
    rel = dict(info, truth="truth.parquet",
               datasets=[dict(d, root=Path(d["root"]).name) for d in info["datasets"]])
    (out / "world.json").write_text(json.dumps(rel, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return info


def dataset_specs(info: dict) -> list:
    """DatasetSpec list for the datasets of a :func:`make_world` result (pipeline order)."""
    from uniseg_cli.data.base import DatasetSpec

    return [DatasetSpec(name=d["name"], root=d["root"], format="generic", role=d["role"]) for d in info["datasets"]]
