"""Packaging a user can trust: an sdist and a wheel that install into a fresh
virtualenv and work there (an unprivileged pkt-gen run over a pipe), with the
type information and every subpackage inside."""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import tarfile
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    # --no-isolation: build with this environment's setuptools, no download
    subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--sdist", "--wheel",
                    "--outdir", str(out), str(ROOT)], check=True, capture_output=True,
                   timeout=300)
    return out


def test_wheel_and_sdist_hold_the_whole_package(dist: Path) -> None:
    (wheel,) = glob.glob(str(dist / "pynetmap-*.whl"))
    (sdist,) = glob.glob(str(dist / "pynetmap-*.tar.gz"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for module in ("pynetmap/py.typed", "pynetmap/osl/posix.py", "pynetmap/osl/windows.py",
                   "pynetmap/adapters/pipe.py", "pynetmap/linux/nic.py",
                   "pynetmap/apps/pktgen/main.py", "pynetmap/register.py"):
        assert module in names, module
    meta = zipfile.ZipFile(wheel).read(
        next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "Requires-Dist: pyroute2>=0.7; sys_platform == \"linux\"" in meta
    with tarfile.open(sdist) as t:
        assert any(n.endswith("src/pynetmap/py.typed") for n in t.getnames())


def test_the_wheel_works_in_a_fresh_virtualenv(dist: Path, tmp_path: Path) -> None:
    (wheel,) = glob.glob(str(dist / "pynetmap-*.whl"))
    env = tmp_path / "venv"
    venv.create(env, with_pip=True)
    py = env / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", wheel], check=True,
                   capture_output=True, timeout=600)
    smoke = (
        "import subprocess, sys, pynetmap\n"
        "assert pynetmap.__file__.startswith(sys.prefix), pynetmap.__file__\n"
        "rx = subprocess.Popen([sys.executable, '-m', 'pynetmap.apps.pktgen', '-f', 'rx',"
        " '-i', 'netmap:smoke{0', '-n', '5000', '-w', '0'], stdout=subprocess.PIPE, text=True)\n"
        "subprocess.run([sys.executable, '-m', 'pynetmap.apps.pktgen', '-f', 'tx', '-i',"
        " 'netmap:smoke}0', '-n', '5000', '-w', '0'], check=True, capture_output=True,"
        " timeout=60)\n"
        "out, _ = rx.communicate(timeout=60)\n"
        "assert 'Received 5000 packets' in out, out\n"
    )
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    clean["PYNETMAP_RUNDIR"] = str(tmp_path / "run")
    r = subprocess.run([str(py), "-c", smoke], capture_output=True, text=True, timeout=120,
                       cwd=tmp_path, env=clean)
    assert r.returncode == 0, r.stderr + r.stdout
