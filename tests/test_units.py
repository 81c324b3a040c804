"""The unit runner on its own: resume skips finished units, a torn unit is redone, and two
shards write the same samples as one process."""

import threading

from hf_icl.jobs.units import Learner, UnitPlan, run_units
from hf_icl.results import RunFolder
from hf_icl.runtime import Shard


def plan(ran: list[str]) -> UnitPlan:
    def learner(label: str, tasks: list[int], sharded: bool = True) -> Learner:
        def run(units):
            for unit in units:
                ran.append(unit.key)
                yield [
                    {
                        "unit": unit.key,
                        "model": label,
                        "shots": k,
                        "query": q,
                        "value": unit.seed * 10 + unit.order + k,
                    }
                    for k in (0, 2)
                    for q in range(3)
                ]

        return Learner(label, tasks, run, sharded)

    return UnitPlan(
        [learner("a", [0, 1]), learner("b", [1]), learner("baseline:c", [0], False)],
        ["t0", "t1"],
        num_seeds=2,
        demo_orders=2,
        rows_per_unit=6,
    )


def folder_at(path) -> RunFolder:
    path.mkdir()
    return RunFolder(path)


def test_resume_skips_done_units_and_redoes_a_torn_one(tmp_path):
    ran: list[str] = []
    folder = folder_at(tmp_path / "one")
    rows = run_units(plan(ran), folder, progress=False)
    assert len(ran) == 16 and len(rows) == 16 * 6
    assert ran[:3] == ["a|t0|0|0", "a|t0|0|1", "a|t0|1|0"] and ran[-1] == "baseline:c|t0|1|1"
    first = (folder.path / "samples.jsonl").read_bytes()
    lines = first.decode().splitlines(keepends=True)
    (folder.path / "samples.jsonl").write_text("".join(lines[:9]) + lines[9][:15])
    ran.clear()
    assert run_units(plan(ran), folder, progress=False) == rows
    assert len(ran) == 15 and ran[0] == "a|t0|0|1"  # unit 1 was torn, unit 0 complete
    assert (folder.path / "samples.jsonl").read_bytes() == first
    ran.clear()
    run_units(plan(ran), folder, progress=False)
    assert ran == []


def test_two_shards_write_the_same_samples_as_one_process(tmp_path):
    one = folder_at(tmp_path / "one")
    run_units(plan([]), one, progress=False)
    two = folder_at(tmp_path / "two")
    barrier = threading.Barrier(2)
    ran: list[list[str]] = [[], []]
    results: list = [None, None]

    def process(rank: int) -> None:
        results[rank] = run_units(
            plan(ran[rank]), two, Shard(rank, 2, barrier.wait), progress=False
        )

    threads = [threading.Thread(target=process, args=(rank,)) for rank in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results[1] is None and len(ran[0]) == 10 and len(ran[1]) == 6  # baselines on rank 0
    assert not set(ran[0]) & set(ran[1])
    assert (two.path / "samples.jsonl").read_bytes() == (one.path / "samples.jsonl").read_bytes()
    assert not list(two.path.glob("samples.part-*"))
