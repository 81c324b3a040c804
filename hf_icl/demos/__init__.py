"""Demonstration selection: which pool rows each query sees, and in which order.

Importing this package registers the built-in selections (random, first_n, balanced, fixed,
per_query_random, bm25, topk, dpp) and orders (as_selected, nearest_first, nearest_last, random).
"""

from hf_icl.demos import dpp, retrieval, selection  # noqa: F401  (registers)
from hf_icl.demos.base import EMBEDDING_SELECTIONS, SELECTIONS, Selection, SelectionContext
from hf_icl.demos.options import DemoOptions
from hf_icl.demos.plan import ORDERS, DemoPlan, check_options, demo_pool, plan_demos

__all__ = [
    "EMBEDDING_SELECTIONS",
    "ORDERS",
    "SELECTIONS",
    "DemoOptions",
    "DemoPlan",
    "Selection",
    "SelectionContext",
    "check_options",
    "demo_pool",
    "plan_demos",
]
