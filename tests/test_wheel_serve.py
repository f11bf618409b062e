"""``crlm serve`` from the built wheel, in a fresh virtual environment, outside the checkout (issue 13).

What it proves: crlm itself (the CLI, the BentoML service, the calculator's static files) runs from the wheel's
files, not from the checkout: the environment holds only the wheel's ``crlm`` (unzipped into its
site-packages, as pip installs it) and a ``.pth`` line reaching the project environment's third-party packages
(a full install of the stack would take minutes and needs the network). That ``.pth`` line adds a directory
to the path without running its ``.pth`` files, so the editable install of crlm there (its ``__editable__``
finder) is never loaded; the test asserts ``crlm.__file__`` and the service module lie in the new environment.
Run from an empty temporary directory, without PYTHONPATH, on exported bundles; ``/predict`` must answer.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import httpx
import pytest

pytest_plugins = ["serving_fixtures"]

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def build_wheel(target: Path) -> Path:
    """The wheel built from a copy of the sources (the checkout gets no build/ directory)."""
    source = target / "source"
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, source / name)
    dist = target / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(dist), str(source)], check=True, capture_output=True, timeout=300)
    (wheel,) = dist.glob("crlm-*.whl")
    return wheel


def fresh_environment(directory: Path, wheel: Path) -> Path:
    """A venv without pip: the wheel unzipped into its site-packages, the third-party packages by a .pth line,
    and the ``crlm`` console script as pip would write it."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(directory)], check=True, timeout=120)
    python = directory / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    (site / "project-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    script = directory / "bin" / "crlm"
    script.write_text(f"#!{python}\nimport sys\nfrom crlm.cli import app\nsys.exit(app())\n")
    script.chmod(0o755)
    return directory


def test_crlm_serve_runs_from_the_wheel_in_a_fresh_environment(models_dir, tmp_path):
    from serving_fixtures import free_port

    env_dir = fresh_environment(tmp_path / "venv", build_wheel(tmp_path))
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CRLM_HOME", "MLFLOW_TRACKING_URI")
           and not k.startswith("CRLM_")}
    where = subprocess.run([str(env_dir / "bin" / "python"), "-c",
                            "import crlm, crlm.serving.service as s; print(crlm.__file__); print(s.__file__); "
                            "print(s.STATIC)"], cwd=workdir, env=env, check=True, capture_output=True, text=True,
                           timeout=120).stdout.split()
    for path in where:
        assert Path(path).resolve().is_relative_to(env_dir.resolve()), path  # not the checkout's src/
    assert (Path(where[2]) / "index.html").exists()

    port = free_port()
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([str(env_dir / "bin" / "crlm"), "serve", "--port", str(port), "--models-dir",
                                 str(models_dir), "--workers", "1"], cwd=workdir, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 90
            while True:
                assert proc.poll() is None, log_path.read_text()[-3000:]
                try:
                    if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, log_path.read_text()[-3000:]
                time.sleep(0.3)
            patient = {"age_years": 64, "n_liver_metastases": 3, "largest_metastasis_cm": 4.2}
            resp = httpx.post(f"{url}/predict", json={"patient": patient}, timeout=60)
            assert resp.status_code == 200, resp.text
            assert resp.json()["models"]["os"]["name"] == "crlm-sim-os"
            assert 0 < resp.json()["os"]["horizons"][0]["survival"] < 1
            assert "CRLM survival calculator" in httpx.get(f"{url}/ui/", timeout=10).text
            assert "/models" in httpx.get(f"{url}/docs.json", timeout=10).json()["paths"]
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
