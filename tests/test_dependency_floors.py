"""The lowest versions pyproject.toml allows are versions the code runs on: each is installed from PyPI and
the code that needs it is run against it (an older release too, so the check is seen to bite).

`python-multipart>=0.0.18` was declared while the multipart reader passed `max_header_size` (0.0.27) and
relied on the 256-byte boundary cap (0.0.28): with 0.0.18-0.0.26 every multipart upload was a 500."""

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Uses the installed python-multipart the way the service does, on a form as `curl -F` sends it.
MULTIPART_USE = """
import python_multipart
from imagenet_zoo.server.multipart import image_files
body = (b'--b\\r\\nContent-Disposition: form-data; name="file"; filename="a.png"\\r\\n'
        b'Content-Type: image/png\\r\\n\\r\\nPNGDATA\\r\\n--b--\\r\\n')
print(python_multipart.__version__, image_files(body, "multipart/form-data; boundary=b", max_files=1))
"""


def declared_floor(package: str) -> str:
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    [spec] = [d for d in dependencies if re.match(rf"{re.escape(package)}\s*>=", d)]
    return spec.split(">=")[1].split(",")[0].split(";")[0].strip()


# The service's routes (query parameter models: FastAPI 0.115) answering through a test client.
SERVICE_USE = """
import fastapi
from fastapi.testclient import TestClient
from imagenet_zoo.server import create_app
from tests.fakes import fake_settings, png_bytes
with TestClient(create_app(fake_settings())) as client:
    answer = client.post("/v1/classify?top_k=3", files={"file": ("a.png", png_bytes(), "image/png")})
    bad = client.post("/v1/classify?top_k=0", content=png_bytes())
print(fastapi.__version__, answer.status_code, len(answer.json()["predictions"]), bad.status_code)
"""


def _run_with(
    package: str, version: str, code: str, target: Path, *, deps: bool = False
) -> subprocess.CompletedProcess[str]:
    install = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--target",
        str(target),
        f"{package}=={version}",
    ]
    subprocess.run(install + ([] if deps else ["--no-deps"]), check=True, capture_output=True, timeout=300)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), str(ROOT / "src"), str(ROOT)])}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)


@pytest.mark.slow
def test_the_declared_floor_of_python_multipart_reads_uploads(tmp_path: Path) -> None:
    floor = declared_floor("python-multipart")
    run = _run_with("python-multipart", floor, MULTIPART_USE, tmp_path / "floor")
    assert run.returncode == 0, run.stderr
    assert run.stdout.split()[0] == floor and "a.png" in run.stdout
    older = _run_with("python-multipart", "0.0.26", MULTIPART_USE, tmp_path / "older")
    assert older.returncode != 0 and "max_header_size" in older.stderr  # what the old floor allowed


@pytest.mark.slow
def test_the_declared_floor_of_fastapi_serves(tmp_path: Path) -> None:
    floor = declared_floor("fastapi")
    run = _run_with("fastapi", floor, SERVICE_USE, tmp_path / "floor", deps=True)  # with its Starlette
    assert run.returncode == 0, run.stderr
    version, *answers = run.stdout.split()
    assert version.removesuffix(".0") == floor.removesuffix(".0") and answers == ["200", "3", "422"]
