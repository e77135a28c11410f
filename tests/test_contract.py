"""The HTTP contract, checked by software nobody here wrote: Schemathesis fuzzes a running `serve` process
from its own OpenAPI document, with every check (status codes, content types, response schemas, Allow
headers on 405, schema-valid requests accepted, invalid ones rejected, authentication not ignored).
Rejections the document cannot express are listed, with the reason, in schemathesis.toml."""

import os
import subprocess
import sys
from pathlib import Path

import httpx

from tests.test_serve_process import free_port, wait_ready

ROOT = Path(__file__).resolve().parents[1]
KEY = "contract-test-key-0123456789"


def test_schemathesis_finds_no_failure(with_lite0: Path, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text(f"# the test's key\n{KEY}\n")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    serve = [sys.executable, "-m", "imagenet_zoo", "serve", "--port", str(port), "--drain-seconds", "0"]
    process = subprocess.Popen(
        [*serve, "--api-key-file", str(keys)], env=dict(os.environ), stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        wait_ready(url, process)
        schemathesis = Path(sys.executable).with_name("schemathesis")
        command = [
            str(schemathesis), "--config-file", str(ROOT / "schemathesis.toml"), "run", f"{url}/openapi.json",
            "--checks", "all", "--max-examples", "100", "--seed", "1",
            "--header", f"Authorization: Bearer {KEY}", "--no-color",
        ]  # fmt: skip
        run = subprocess.run(command, capture_output=True, text=True, timeout=400, cwd=tmp_path)
        summary = run.stdout[-3000:]
        assert run.returncode == 0, summary
        assert "Tested: 13" in summary and "No issues found" in summary, summary
        document = httpx.get(f"{url}/openapi.json").json()
        assert document["paths"]["/metrics"]["get"]["responses"]["200"]["content"].keys() == {"text/plain"}
        assert "401" in document["paths"]["/v1/classify"]["post"]["responses"]
        assert KEY not in httpx.get(f"{url}/openapi.json").text
    finally:
        process.terminate()
        process.wait(30)
    assert KEY not in (process.stderr.read().decode() if process.stderr else "")
