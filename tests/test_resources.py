"""Built-in tasks and configs must resolve after a non-editable (wheel) install too."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_ships_builtin_tasks_and_configs(tmp_path):
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(ROOT),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
        ],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr
    [wheel] = (tmp_path / "dist").glob("hf_icl-*.whl")
    site = tmp_path / "site"
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(site),
            str(wheel),
        ],
        capture_output=True,
        text=True,
    )
    assert install.returncode == 0, install.stderr
    probe = (
        "import hf_icl, sys\n"
        "from hf_icl.resources import builtin_dir\n"
        "from hf_icl.tasks import load_task\n"
        "from hf_icl.resources import find_config\n"
        "assert 'site' in hf_icl.__file__, hf_icl.__file__\n"
        "print(builtin_dir('tasks'))\n"
        "ep = load_task('sentiment')[1].episode(0, 4, 2)\n"
        "print(len(ep.demo_x), find_config('quickstart'))\n"
        "print(builtin_dir('accelerate_configs') / 'ddp_2proc.yaml')\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
    )
    assert run.returncode == 0, run.stderr
    tasks_dir, line, ddp = run.stdout.strip().splitlines()
    assert tasks_dir.startswith(str(site)) and tasks_dir.endswith("hf_icl/_builtin/tasks")
    assert line.startswith("4 ") and "_builtin/eval_configs/quickstart.yaml" in line
    assert ddp.startswith(str(site)) and Path(ddp).is_file()
