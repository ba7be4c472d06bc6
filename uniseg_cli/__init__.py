"""uniseg: automated label unification for multi-dataset semantic segmentation."""

__version__ = "0.1.0"
