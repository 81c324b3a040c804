"""Task samplers, one module per family; importing this package registers them all."""

from hf_icl.samplers import gaussian_mixture, projected, regression, text  # noqa: F401  (registers)
from hf_icl.samplers.base import FAMILIES, Split, TaskSampler, rng_for

__all__ = ["FAMILIES", "Split", "TaskSampler", "rng_for"]
