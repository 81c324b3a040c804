"""The trained learner's first home, kept because model cards printed
``from hf_icl.icl_model import load_trained``; it now lives in ``hf_icl.models``."""

from hf_icl.models.learner import load_trained

__all__ = ["load_trained"]
