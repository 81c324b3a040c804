"""The arith_mc task's data, read from the JSONL files next to this file (so the task runs from
any working directory, and from an installed wheel)."""

from pathlib import Path

import datasets


def load(**_) -> datasets.DatasetDict:
    folder = Path(__file__).parent / "arith_mc"
    return datasets.DatasetDict({split: datasets.Dataset.from_json(str(folder / f"{split}.jsonl"))
                                 for split in ("train", "test")})
