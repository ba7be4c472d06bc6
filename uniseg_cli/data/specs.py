"""Dataset arguments on the command line: ``ROOT``, ``NAME=ROOT`` or ``NAME=FORMAT:ROOT``.

    >>> parse_dataset_arg("cs=cityscapes:/data/cityscapes")
    DatasetSpec(name='cs', root='/data/cityscapes', format='cityscapes', role='train', ...)

A bare ``ROOT`` is a generic dataset named by its ``labels.yaml`` (else the folder name). A
``FORMAT:`` prefix is only taken as a format when it names a known one, so roots holding a colon
still work.
"""
from __future__ import annotations

from pathlib import Path

import yaml

from uniseg_cli.data.base import DatasetSpec
from uniseg_cli.errors import UsageError


def _yaml_name(root: Path) -> str | None:
    try:
        doc = yaml.safe_load((root / "labels.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return None
    name = doc.get("name") if isinstance(doc, dict) else None
    return name if isinstance(name, str) and name.strip() else None


def parse_dataset_arg(s: str, role: str = "train") -> DatasetSpec:
    """A :class:`DatasetSpec` from ``ROOT``, ``NAME=ROOT`` or ``NAME=FORMAT:ROOT`` (UsageError if malformed)."""
    from uniseg_cli.data import known_formats

    text = s.strip()
    if not text:
        raise UsageError("empty dataset argument", hint="give ROOT, NAME=ROOT or NAME=FORMAT:ROOT.")
    name = None
    if "=" in text:
        name, text = (part.strip() for part in text.split("=", 1))
        if not name or not text:
            raise UsageError(f"dataset argument {s!r}: expected NAME=ROOT or NAME=FORMAT:ROOT",
                             hint="e.g. cs=cityscapes:/data/cityscapes or mine=/data/mine (generic format).")
    fmt = "generic"
    if ":" in text:
        head, rest = text.split(":", 1)
        if head in known_formats():
            fmt, text = head, rest
        elif len(head) > 1 and not Path(text).exists() and head.isidentifier():
            raise UsageError(f"dataset argument {s!r}: unknown format {head!r}",
                             hint=f"known formats: {', '.join(known_formats())}.")
    root = Path(text).expanduser()
    if name is None:
        name = (_yaml_name(root) if fmt == "generic" else None) or root.resolve().name or str(root)
    return DatasetSpec(name=name, root=str(root), format=fmt, role=role)
