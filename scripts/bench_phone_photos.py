"""Folder-job rate on 12-megapixel phone photos against ImageNet-sized ones, in one run.

    .venv/bin/python scripts/bench_phone_photos.py [--copies 6] [--precision fp32 int8] [--phone DIR]

Makes 12-MP JPEG copies of the shared sample (scripts/make_phone_photos.py) unless --phone names a folder
of them, links each set `--copies` times under distinct names, and times whole `imagenet-zoo classify DIR
--output results.jsonl` processes (start-up and writing included) on the originals and on the phone
photos with --decode fast (default) and full. Decode cost per photo and the fast-mode bound
1 / (decode / cores + inference) come from `imagenet-zoo bench --end-to-end`. Peak RSS is the classify
process's own. Prints a Markdown table; int8 needs `imagenet-zoo quantize efficientnet_lite0` first.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from make_phone_photos import SAMPLE, phone_photo

BIN = Path(sys.executable).parent
MODEL = "efficientnet_lite0"


def linked(source: Path, target: Path, copies: int) -> Path:
    target.mkdir()
    for copy in range(copies):
        for photo in sorted(source.iterdir()):
            (target / f"{copy:02d}_{photo.name}").symlink_to(photo.resolve())
    return target


def classify(folder: Path, precision: str, decode: str, work: Path) -> tuple[float, float]:
    """(photos/s, peak RSS in MB) of one whole classify process."""
    output = work / f"results-{folder.name}-{precision}-{decode}.jsonl"
    command = [
        str(BIN / "imagenet-zoo"),
        "classify",
        str(folder),
        "--quiet",
        "--output",
        str(output),
        "--model",
        MODEL,
        "--precision",
        precision,
        "--decode",
        decode,
    ]
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)  # this process's own peak RSS, not its siblings'
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"classify failed: {' '.join(command)}")
    return sum(1 for _ in output.open()) / seconds, usage.ru_maxrss / 1024


def end_to_end(folder: Path, precision: str) -> dict[str, float]:
    command = [
        str(BIN / "imagenet-zoo"),
        "bench",
        "--model",
        MODEL,
        "--engine",
        "openvino",
        "--precision",
        precision,
        "--batch-size",
        "8",
        "--seconds",
        "1",
        "--end-to-end",
        str(folder),
        "--no-cold-start",
        "--format",
        "json",
    ]
    rows = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
    return next(row["extra"] for row in rows if row["mode"] == "end_to_end")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=6, help="links of each set (default 6: 1,200 photos)")
    parser.add_argument("--precision", nargs="+", default=["fp32"], help="fp32 (default), int8, bf16")
    parser.add_argument("--phone", type=Path, help="a folder of 12-MP copies already made")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="phone-bench-") as tmp:
        work = Path(tmp)
        phone = args.phone
        if phone is None:
            phone = work / "phone-source"
            phone.mkdir()
            for i, source in enumerate(sorted(SAMPLE.iterdir())):
                phone_photo(source, phone / f"{source.stem}.jpg", sideways=i % 3 == 0)
        originals, phones = (
            linked(SAMPLE, work / "originals", args.copies),
            linked(phone, work / "phone", args.copies),
        )
        print(f"{args.copies * 200} photos per set; CPU: {_cpu()}; {os.cpu_count()} cores\n")
        print(
            "| precision | ImageNet-sized/s | 12 MP fast/s | ratio | bound/s | of bound | 12 MP full/s | "
            "decode ms fast / full | peak RSS MB |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for precision in args.precision:
            base, _ = classify(originals, precision, "fast", work)
            fast, peak = classify(phones, precision, "fast", work)
            full, _ = classify(phones, precision, "full", work)
            e2e = end_to_end(phone, precision)
            bound = e2e["bound_images_per_second"]
            decode = f"{e2e['decode_ms_per_image']:.1f} / {e2e['decode_full_ms_per_image']:.1f}"
            cells = [
                precision,
                f"{base:.1f}",
                f"{fast:.1f}",
                f"{fast / base:.0%}",
                f"{bound:.1f}",
                f"{fast / bound:.0%}",
                f"{full:.1f}",
                decode,
                f"{peak:.0f}",
            ]
            print("| " + " | ".join(cells) + " |")
    return 0


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


if __name__ == "__main__":
    sys.exit(main())
