"""The decoder under a coverage-guided fuzzer (Atheris/libFuzzer), for a bounded time in CI.

Seeds are small JPEG, PNG, GIF, WebP and TIFF files made from shared-sample photos. Every mutated input
must decode or become the photo's typed error: no other exception, no hang (-timeout), no runaway memory
(the harness checks its resident memory). IMAGENET_ZOO_FUZZ_SECONDS sets the time (default 30; longer
runs are done by hand).
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import SAMPLE_DIR

HARNESS = Path(__file__).parent / "fuzz" / "decode_fuzzer.py"
FORMATS = {"jpg": {"quality": 80}, "png": {}, "gif": {}, "webp": {"quality": 70}, "tiff": {}}


def seed_corpus(folder: Path) -> Path:
    folder.mkdir()
    for i, photo in enumerate(sorted(SAMPLE_DIR.iterdir())[:4]):
        with Image.open(photo) as image:
            small = image.convert("RGB").resize((48, 36))
        for suffix, options in FORMATS.items():
            small.save(folder / f"{i}.{suffix}", **options)
    return folder


@pytest.mark.slow
def test_the_decoder_survives_a_fuzzing_run(tmp_path: Path) -> None:
    seconds = int(os.environ.get("IMAGENET_ZOO_FUZZ_SECONDS", "30"))
    corpus = seed_corpus(tmp_path / "corpus")
    command = [
        sys.executable, str(HARNESS), str(corpus), f"-max_total_time={seconds}", "-timeout=10",
        "-rss_limit_mb=0", f"-artifact_prefix={tmp_path}/", "-print_final_stats=1",  # the harness checks RSS
    ]  # fmt: skip
    run = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 120, check=False)
    findings = sorted(p.name for p in tmp_path.iterdir() if re.match(r"(crash|timeout|oom|leak)-", p.name))
    assert run.returncode == 0 and not findings, run.stderr[-3000:]
    executions = int(re.search(r"stat::number_of_executed_units:\s*(\d+)", run.stderr).group(1))  # type: ignore[union-attr]
    assert executions > 1000
    print(f"fuzzed the decoder for {seconds} s: {executions} executions, no finding")
