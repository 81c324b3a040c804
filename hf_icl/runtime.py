"""What every job and the trainer share about the process they run in: its shard of a
multi-process run and the command-line options that do not change results."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Shard:
    """This process's share of a (possibly multi-process) run."""

    rank: int = 0
    world: int = 1
    barrier: Callable[[], None] = lambda: None

    @property
    def log(self) -> str:
        return "samples.jsonl" if self.world == 1 else f"samples.part-{self.rank}.jsonl"

    def mine(self, items: list) -> list:
        return items[self.rank :: self.world]


@dataclass
class JobOptions:
    """Command-line options that are not part of the config (they do not change results)."""

    progress: bool = True
    shard: Shard = field(default_factory=Shard)
    push_to_hub: str | None = None
    private: bool = False


def make_shard() -> Shard:
    """One process, or this process's rank when started by `accelerate launch` / torchrun."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Shard()
    import torch
    from accelerate import PartialState

    # On CPU, accelerate needs cpu=True to start gloo (its --cpu flag starts one process only).
    state = PartialState(cpu=not torch.cuda.is_available())
    return Shard(state.process_index, state.num_processes, state.wait_for_everyone)
