"""The rows of `uniseg datasets`: every registered format with its layout and label space."""
from __future__ import annotations

from uniseg_cli.data import FORMAT_LAYOUTS, FORMAT_MODULES, FORMATS, known_formats


def format_rows() -> list[dict]:
    """One dict per format: name, module, layout, label_space (None: the dataset brings its own), num_classes."""
    rows = []
    for name in known_formats():
        factory = FORMATS[name]
        space = getattr(factory, "space", None) or None
        n = None
        if space:
            from uniseg_cli.data.formats._common import label_space

            n = label_space(space).num_classes
        rows.append({
            "name": name,
            "module": FORMAT_MODULES.get(name, getattr(factory, "__module__", "")),
            "layout": FORMAT_LAYOUTS.get(name, ""),
            "label_space": space,
            "num_classes": n,
        })
    return rows
