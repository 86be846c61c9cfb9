"""The wheel works outside the repository: it carries its configs and the manifest.

The wheel is built from this checkout, installed into a folder of its own, and run from
another directory (the dependencies come from the test's environment).
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``(wheel, site folder with the wheel installed)``."""
    work = tmp_path_factory.mktemp("wheel")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    build = subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(work), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = work.glob("wsi_ncmi-*.whl")
    site = work / "site"
    install = subprocess.run(
        [*pip, "install", "--no-deps", "--target", str(site), str(wheel)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    return wheel, site


def _run(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )


def test_wheel_carries_configs_and_manifest(installed: tuple[Path, Path]) -> None:
    wheel, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    for shipped in (
        "wsi_ncmi/configs/bench/synthetic_demo.yaml",
        "wsi_ncmi/configs/camelyon17/abmil_ncmi.yaml",
        "wsi_ncmi/configs/slurm/bench.sbatch",
        "wsi_ncmi/data_manifests/camelyon17.csv",
        "wsi_ncmi/py.typed",
    ):
        assert shipped in names, shipped
    assert not any(n.startswith(("tests/", "tools/")) for n in names)


@pytest.mark.slow  # wsi-* in child processes, each importing Lightning
def test_installed_wheel_runs_from_another_directory(
    installed: tuple[Path, Path], tmp_path: Path
) -> None:
    """What the demo needs from the wheel, outside any checkout, without running it.

    The demo's own run (``test_the_demo_runs_from_the_installed_wheel``, 40 s) is ``slow``;
    the same pipeline on the same config runs in the default suite in ``test_bench_e2e``.
    Here: the demo's config and manifest resolve to the wheel's copies and load, its CLI
    starts, and the report's provenance works outside a git checkout.
    """
    _, site = installed
    probe = (
        "import wsi_ncmi.demo as d\n"
        "from wsi_ncmi.bench.parser import load_config\n"
        "from wsi_ncmi.manifest import read_manifest\n"
        "from wsi_ncmi.train.html import provenance\n"
        "print(d.DEFAULT_CONFIG)\n"
        "print(d.DEFAULT_MANIFEST)\n"
        "print(load_config(d.DEFAULT_CONFIG, {}).name)\n"
        "print(len(read_manifest(d.DEFAULT_MANIFEST)))\n"
        "print(provenance({}, 'random-cnn')['git_commit'])\n"
    )
    where = _run(site, tmp_path, "-c", probe)
    assert where.returncode == 0, where.stderr[-2000:]
    config, manifest, name, slides, commit = where.stdout.strip().splitlines()
    for shipped in (Path(config), Path(manifest)):
        assert shipped.is_relative_to(site)  # the wheel's copy, not this checkout's
        assert shipped.is_file()
    assert (name, slides, commit) == ("synthetic_demo", "500", "not a git checkout")
    for module in (
        "wsi_ncmi.demo",
        "wsi_ncmi.cli.tile",
        "wsi_ncmi.cli.train",
        "wsi_ncmi.cli.synth",
    ):
        done = _run(site, tmp_path, "-m", module, "--help")
        assert done.returncode == 0, (module, done.stderr[-2000:])


@pytest.mark.slow  # wsi-* in child processes, each importing Lightning
def test_readme_config_names_resolve_outside_the_repository(
    installed: tuple[Path, Path], tmp_path: Path
) -> None:
    """Issue 24 #12: the README's ``--config configs/...`` and the default manifest."""
    _, site = installed
    listed = _run(site, tmp_path, "-m", "wsi_ncmi.cli.train", "--list_configs")
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert "camelyon17/abmil_ncmi.yaml" in listed.stdout
    for args in (
        ("wsi_ncmi.cli.train", "--config", "configs/camelyon17/abmil_ncmi.yaml"),
        ("wsi_ncmi.cli.train", "--config", "camelyon17/abmil_ce.yaml"),
        ("wsi_ncmi.cli.bench", "--config", "configs/bench/camelyon17_loho.yaml"),
    ):
        done = _run(site, tmp_path, "-m", *args, "--print_config")
        assert done.returncode == 0, (args, done.stderr[-2000:])
        assert "data_manifests/camelyon17.csv" in done.stdout
    probe = "from wsi_ncmi.manifest import read_manifest\n"
    probe += "print(len(read_manifest('data_manifests/camelyon17.csv')))\n"
    where = _run(site, tmp_path, "-c", probe)
    assert where.stdout.strip() == "500", where.stderr[-2000:]


@pytest.mark.slow
def test_the_demo_runs_from_the_installed_wheel(installed: tuple[Path, Path], tmp_path: Path):
    """A reduced demo (2 slides per hospital, one fold, one epoch) outside the repository."""
    _, site = installed
    done = _run(
        site,
        tmp_path,
        "-m",
        "wsi_ncmi.demo",
        "--out_dir",
        "demo",
        "--slides_per_center",
        "2",
        "--workers",
        "1",
        "--progress",
        "false",
        "--set",
        "sweep.seeds=[0]",
        "--set",
        "sweep.split={kind: fixed, preset: c17_train012_test34}",
        "--set",
        "train.trainer.max_epochs=1",
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert (tmp_path / "demo" / "bench" / "synthetic_demo" / "report.html").is_file()
