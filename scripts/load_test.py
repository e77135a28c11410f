"""Load test of `imagenet-zoo serve` on loopback: latency and throughput, a full queue, memory under abuse.

Starts its own servers on 127.0.0.1 (never another address), bounded in requests and seconds per phase:

1. real photos at concurrency 1, 4 and 16: p50/p95/p99 latency and throughput, counting any 5xx, sent by
   a lean client (`send_all`) so that the generator takes little of the CPU the server shares with it;
2. a server with a 2-slot queue flooded by 24 concurrent requests: the overflow must get 503 at once;
3. 5,000 bad requests (empty, text, truncated JPEG, decompression bomb, oversized): the server's resident
   memory is sampled along the way and must stay flat;
4. abuse: 16-file batches of a 1x100,000-pixel PNG (under 500 bytes each), and 20 MB uploads 32 at a
   time (more than the server reads at once): every answer typed, no 5xx, memory sampled;
5. attacks (`attacks`): ordinary clients and health probes alone, then alongside v2 requests of
   thousands of images, slow bodies (20 MB promised, a byte a second), model thrash and clients that hang
   up mid-upload: the ordinary clients' rate, p50/p99, 5xx and 503, the slowest health check and the
   server's peak memory for each (for the hang-ups, also what the server counted them as).

Prints a markdown report. Usage: python scripts/load_test.py [--requests N] [--bad-requests N]
[--phases throughput bad abuse queue attacks] [--attack-seconds S] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import httpx

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenet-sample"
PHASE_TIMEOUT_S = 300


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def server(*extra: str) -> Iterator[tuple[str, int]]:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "imagenet_zoo",
        "serve",
        "--port",
        str(port),
        "--drain-seconds",
        "0",
        *extra,
    ]
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log)
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(url, process, log)
            yield url, process.pid
        finally:
            process.terminate()
            process.wait(timeout=60)


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: IO[bytes]) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.3)
    log.seek(0)
    said = log.read().decode(errors="replace")[-3000:]
    raise SystemExit(f"the server did not become ready (exit code {process.poll()}):\n{said}")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def timed_post(client: httpx.AsyncClient, url: str, **kwargs: object) -> tuple[int, float]:
    start = time.perf_counter()
    response = await client.post(url, **kwargs)  # type: ignore[arg-type]
    return response.status_code, time.perf_counter() - start


async def run_concurrently(
    url: str, payloads: list[dict[str, object]], concurrency: int
) -> list[tuple[int, float]]:
    """Send every payload with `concurrency` requests in flight; returns (status, seconds) per request."""
    queue: asyncio.Queue[dict[str, object]] = asyncio.Queue()
    for payload in payloads:
        queue.put_nowait(payload)
    results: list[tuple[int, float]] = []
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:

        async def worker() -> None:
            while not queue.empty():
                results.append(await timed_post(client, url, **queue.get_nowait()))

        await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(concurrency))), PHASE_TIMEOUT_S)
    return results


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def photo_requests(url: str, count: int, body: str = "multipart") -> list[bytes]:
    """`count` photo requests as HTTP/1.1 bytes: multipart (`curl -F file=@photo.jpg`) or raw
    (`curl --data-binary`). Built once, before the clock starts, so the generator only sends them."""
    photos = (sorted(SHARED.iterdir()) * (count // 200 + 1))[:count]
    target = httpx.URL(url)
    requests = []
    for photo in photos:
        files = {"file": (photo.name, photo.read_bytes(), "image/jpeg")} if body == "multipart" else None
        content = None if files else photo.read_bytes()
        built = httpx.Request("POST", target, files=files, content=content)
        head = [f"POST {target.raw_path.decode()} HTTP/1.1", f"Host: {target.netloc.decode()}"]
        head += [f"{k}: {v}" for k, v in built.headers.items() if k.lower() != "host"]
        requests.append(("\r\n".join(head) + "\r\n\r\n").encode() + built.read())
    return requests


async def send_all(url: str, requests: list[bytes], concurrency: int) -> list[tuple[int, float]]:
    """Send prepared requests over `concurrency` keep-alive connections; (status, seconds) each.

    A lean client (asyncio streams, pre-built bytes, only the status line and Content-Length parsed):
    it shares the machine with the server, and httpx spent a quarter of a core here, CPU the server
    then lacked (the folder job it is compared with has no client to feed).
    """
    target = httpx.URL(url)
    pending = list(reversed(requests))
    results: list[tuple[int, float]] = []

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(target.host, target.port)
        try:
            while pending:
                request = pending.pop()
                start = time.perf_counter()
                writer.write(request)
                status, close = await _read_response(reader)
                results.append((status, time.perf_counter() - start))
                if close:
                    writer.close()
                    reader, writer = await asyncio.open_connection(target.host, target.port)
        finally:
            writer.close()

    await asyncio.wait_for(asyncio.gather(*(connection() for _ in range(concurrency))), PHASE_TIMEOUT_S)
    return results


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """(status, whether the server closes the connection) of one response, its body read and dropped."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
    await reader.readexactly(int(headers["content-length"]))  # every answer of this server declares it
    return int(lines[0].split()[1]), headers.get("connection") == "close"


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


FOLDER_JOB = """
import sys, time
import imagenet_zoo
from imagenet_zoo.data.images import find_images
paths = (find_images([sys.argv[1]], recursive=False) * 100)[: int(sys.argv[3])]
classifier = imagenet_zoo.load("efficientnet_lite0", precision=sys.argv[2], progress=False)
classifier.classify(list(paths[:16]))
start = time.perf_counter()
assert all(r.ok for r in classifier.classify(list(paths)))
print(len(paths) / (time.perf_counter() - start))
"""


def folder_job_rate(precision: str, count: int) -> float:
    """Photos per second of the folder job's classifier on the same photos, in its own process."""
    if precision == "int8":
        quantize = [sys.executable, "-m", "imagenet_zoo", "quantize", "efficientnet_lite0"]
        subprocess.run([*quantize, "--calibration", str(SHARED)], check=True, capture_output=True)
    command = [sys.executable, "-c", FOLDER_JOB, str(SHARED), precision, str(count)]
    return float(subprocess.run(command, check=True, capture_output=True, text=True).stdout.split()[-1])


def batch_counts(url: str) -> tuple[float, float]:
    """(images, engine calls) so far, from the server's batch-size histogram."""
    lines = httpx.get(f"{url}/metrics").text.splitlines()

    def total(series: str) -> float:
        return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(series))

    return total("imagenet_zoo_batch_size_sum"), total("imagenet_zoo_batch_size_count")


def throughput(url: str, requests: int, concurrency: int, body: str) -> tuple[dict[str, float], int]:
    """Requests per second, latency percentiles (ms) and mean images per engine call; and the 5xx count."""
    target = f"{url}/v1/classify"
    asyncio.run(send_all(target, photo_requests(target, 2 * concurrency), concurrency))  # warm
    prepared = photo_requests(target, requests, body)
    images, calls = batch_counts(url)
    start = time.perf_counter()
    results = asyncio.run(send_all(target, prepared, concurrency))
    elapsed = time.perf_counter() - start
    images_after, calls_after = batch_counts(url)
    seconds = [s for _, s in results]
    row = {f"p{q}": 1000 * percentile(seconds, q) for q in (50, 95, 99)}
    row["rate"] = len(results) / elapsed
    row["per_call"] = (images_after - images) / max(1.0, calls_after - calls)
    return row, sum(status >= 500 for status, _ in results)


def bomb_png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 50_000, 50_000, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00"))
        + chunk(b"IEND", b"")
    )


def bad_payloads(count: int) -> list[dict[str, object]]:
    jpeg = sorted(SHARED.iterdir())[0].read_bytes()
    kinds: list[dict[str, object]] = [
        {"content": b""},
        {"content": b"definitely not an image " * 40},
        {"files": {"file": ("x.jpg", jpeg[: len(jpeg) // 3], "image/jpeg")}},
        {"content": bomb_png()},
    ]
    oversized = {"content": b"\x00" * (21 * 2**20)}  # over the default 20 MB limit; one request in a hundred
    return [oversized if i % 100 == 99 else kinds[i % len(kinds)] for i in range(count)]


V2_IMAGE = {"name": "IMAGE", "shape": [1], "datatype": "BYTES"}


def v2_bad(payloads: list[dict[str, object]]) -> list[dict[str, object]]:
    """The same bad images as Open Inference Protocol requests (binary tensors, as tritonclient sends),
    and requests broken in the protocol's own ways: bad JSON, bad base64, truncated tensors."""
    out: list[dict[str, object]] = []
    for i, payload in enumerate(payloads):
        image = payload.get("content")
        if not isinstance(image, bytes):
            file = payload["files"]["file"]  # type: ignore[index]
            image = file[1]
        kind = i % 4
        if kind == 0:
            out.append(v2_binary(image))
        elif kind == 1:
            out.append({"content": json.dumps({"inputs": [{**V2_IMAGE, "data": ["@@"]}]}).encode()})
        elif kind == 2:
            request = v2_binary(image)
            out.append({"content": request["content"][:-3], "headers": request["headers"]})  # type: ignore[index]
        else:
            out.append({"content": b'{"inputs": [' * 50})
    return out


def v2_binary(image: bytes) -> dict[str, object]:
    tensor = struct.pack("<I", len(image)) + image
    inputs = [{**V2_IMAGE, "parameters": {"binary_data_size": len(tensor)}}]
    header = json.dumps({"inputs": inputs, "parameters": {"binary_data_output": True}}).encode()
    return {"content": header + tensor, "headers": {"Inference-Header-Content-Length": str(len(header))}}


PHASES = ("throughput", "bad", "abuse", "queue", "attacks")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=200, help="photo requests per concurrency level")
    parser.add_argument("--bad-requests", type=int, default=5000)
    parser.add_argument(
        "--precision",
        action="append",
        choices=("fp32", "bf16", "int8"),
        help="precisions to measure throughput in (default fp32 and int8; int8 is quantized if needed)",
    )
    parser.add_argument("--phases", nargs="+", choices=PHASES, default=list(PHASES), help="what to run")
    parser.add_argument("--attack-seconds", type=float, default=20.0, help="how long each attack lasts")
    parser.add_argument("--json", type=Path, help="also write the attacks' measurements to this file")
    args = parser.parse_args()
    args.precision = args.precision or ["fp32", "int8"]
    report = [
        f"Load test of `imagenet-zoo serve` (EfficientNet-Lite0, OpenVINO), {os.cpu_count()} cores, "
        f"{cpu_model()}:"
    ]
    phases = {
        "throughput": throughput_phase,
        "bad": bad_phase,
        "abuse": abuse_phase,
        "queue": queue_phase,
        "attacks": attacks_phase,
    }
    server_errors = 0
    for phase in args.phases:
        lines, errors = phases[phase](args)
        report += ["", *lines]
        server_errors += errors
    report += [
        "",
        f"5xx other than the queue's 503 (and, under attack, ordinary requests' 503): {server_errors}",
    ]
    print("\n".join(report))
    sys.exit(1 if server_errors else 0)


def throughput_phase(args: argparse.Namespace) -> tuple[list[str], int]:
    """Real photos at concurrency 1, 4 and 16, against the folder job's rate on the same photos."""
    server_errors = 0
    folder = {precision: folder_job_rate(precision, args.requests) for precision in args.precision}
    report = [
        "| precision | dynamic batching | body | concurrency | req/s | of the folder job | p50 ms | p95 ms "
        "| p99 ms | images per engine call | 5xx |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for precision in args.precision:
        for batching in ("on", "off"):
            first = (precision, batching) == (args.precision[0], "on")
            levels = [(c, "multipart") for c in (1, 4, 16)] if first else [(16, "multipart")]
            levels.append((16, "raw"))
            size = "8" if batching == "on" else "1"
            with server("--precision", precision, "--max-batch-size", size) as (url, _):
                for concurrency, body in levels:
                    row, fivexx = throughput(url, args.requests, concurrency, body)
                    server_errors += fivexx
                    share = row["rate"] / folder[precision]
                    report.append(
                        f"| {precision} | {batching} | {body} | {concurrency} | {row['rate']:.1f} "
                        f"| {share:.0%} | {row['p50']:.1f} | {row['p95']:.1f} | {row['p99']:.1f} "
                        f"| {row['per_call']:.2f} | {fivexx} |"
                    )
    report += [
        "",
        "Folder job on the same photos, same process kind (a loaded classifier's `classify` of a list): "
        + ", ".join(f"{p} {rate:.1f} img/s" for p, rate in folder.items())
        + ".",
    ]
    return report, server_errors


def bad_phase(args: argparse.Namespace) -> tuple[list[str], int]:
    """Bad requests, half to /v2: the server's memory is sampled along the way and must stay flat."""
    with server() as (url, pid):
        rss = [rss_mb(pid)]
        bad = bad_payloads(args.bad_requests)
        statuses: dict[int, int] = {}
        for part in range(5):
            chunk = bad[part * len(bad) // 5 : (part + 1) * len(bad) // 5]
            half = len(chunk) // 2  # half through /v1, half through the Open Inference Protocol
            sent = [
                (f"{url}/v1/classify", chunk[:half]),
                (f"{url}/v2/models/efficientnet_lite0/infer", v2_bad(chunk[half:])),
            ]
            for target, payloads in sent:
                for status, _ in asyncio.run(run_concurrently(target, payloads, 8)):
                    statuses[status] = statuses.get(status, 0) + 1
            rss.append(rss_mb(pid))
    codes = ", ".join(f"{code}: {n}" for code, n in sorted(statuses.items()))
    return [
        f"{args.bad_requests:,} bad requests, half of them to /v2 ({codes}); RSS after each fifth: "
        + " -> ".join(f"{r:.0f}" for r in rss)
        + f" MB (growth {rss[-1] - rss[1]:+.0f} MB after the first fifth)."
    ], sum(n for status, n in statuses.items() if status >= 500)


def abuse_phase(args: argparse.Namespace) -> tuple[list[str], int]:
    """The same abuse three times: memory rises to the upload buffer's bound, then stays."""
    with server() as (url, pid):
        rss = [rss_mb(pid)]
        statuses: dict[int, int] = {}
        for _ in range(3):
            for status, n in asyncio.run(abuse(url)).items():
                statuses[status] = statuses.get(status, 0) + n
            rss.append(rss_mb(pid))
    codes = ", ".join(f"{code}: {n}" for code, n in sorted(statuses.items()))
    return [
        f"Abuse, three rounds of 16-file sliver batches and 20 MB uploads ({codes}); server RSS "
        + " -> ".join(f"{r:.0f}" for r in rss)
        + " MB (--max-upload-buffer-mb 256: uploads read at once, each held twice while it is joined)."
    ], sum(n for status, n in statuses.items() if status >= 500 and status != 503)


def queue_phase(args: argparse.Namespace) -> tuple[list[str], int]:
    with server("--max-queue", "2", "--deadline", "120") as (url, _):
        held, probes = asyncio.run(full_queue(url))
    refused = [seconds for status, seconds in probes if status == 503]
    return [
        f"Full queue (2 slots, both held by 16-photo batches that took {held:.2f} s): "
        f"{len(probes)} single-photo requests sent meanwhile, {len(refused)} refused with 503 "
        f"(Retry-After) in median {1000 * statistics.median(refused or [0]):.1f} ms, "
        f"at most {1000 * max(refused, default=0):.1f} ms."
    ], sum(status >= 500 and status != 503 for status, _ in probes)


def sliver_png(width: int = 1, height: int = 100_000) -> bytes:
    """An RGB PNG one pixel wide (a resize to the model's shorter side asked for 24 GiB)."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


async def abuse(url: str) -> dict[int, int]:
    """Sliver batches at concurrency 8, then 64 uploads of 20 MB at concurrency 32; status counts."""
    slivers = [("file", (f"s{i}.png", sliver_png(), "image/png")) for i in range(16)]
    batches = [{"files": slivers} for _ in range(40)]
    statuses: dict[int, int] = {}
    for status, _ in await run_concurrently(f"{url}/v1/classify/batch", batches, 8):
        statuses[status] = statuses.get(status, 0) + 1
    upload = {"content": os.urandom(20 * 2**20 - 1024)}  # just under the limit: it is read in full
    for status, _ in await run_concurrently(f"{url}/v1/classify", [upload] * 64, 32):
        statuses[status] = statuses.get(status, 0) + 1
    return statuses


async def full_queue(url: str) -> tuple[float, list[tuple[int, float]]]:
    """Hold both queue slots with large batches; meanwhile probe with small requests, one at a time."""
    photos = sorted(SHARED.iterdir())[:16]
    batch = [("file", (p.name, p.read_bytes(), "image/jpeg")) for p in photos]
    small = photos[0].read_bytes()
    probes: list[tuple[int, float]] = []
    async with httpx.AsyncClient(timeout=120) as client:
        start = time.perf_counter()
        holders = [
            asyncio.create_task(client.post(f"{url}/v1/classify/batch", files=batch)) for _ in range(2)
        ]
        await asyncio.sleep(0.05)  # let both batches reach the queue
        while not all(h.done() for h in holders) and len(probes) < 500:
            probes.append(await timed_post(client, f"{url}/v1/classify", content=small))
        for holder in holders:
            assert (await holder).status_code == 200
        return time.perf_counter() - start, probes


GIF_1X1 = bytes.fromhex(
    "47494638396101000100800000ffffff00000021f90401000000002c00000000010001000002024401003b"
)


def attacks_phase(args: argparse.Namespace) -> tuple[list[str], int]:
    """Ordinary clients (one photo per request, concurrency 4) and health probes, alone and under each
    attack: v2 requests of thousands of images, slow bodies that promise 20 MB and send a byte a second,
    and model thrash (two models, requests alternating between them, with and without heatmaps)."""
    with tempfile.TemporaryDirectory() as tmp:
        bundle = tiny_bundle(Path(tmp) / "bundle")
        with server("--model", "efficientnet_lite0", str(bundle)) as (url, pid):
            rows = {
                name: asyncio.run(under_attack(url, pid, attack, args.attack_seconds, bundle))
                for name, attack in (
                    ("none", None),
                    ("many-image v2", many_images),
                    ("slow bodies", slow_bodies),
                    ("model thrash", thrash),
                    ("hang-ups", hang_ups),
                )
            }
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    report = [
        "Under attack (ordinary clients: one photo per request at concurrency 4; health probed every 0.2 s):",
        "",
        "| attack | ordinary req/s | p50 ms | p99 ms | 5xx | 503 | slowest health check ms | attack answers "
        "| server peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        answers = ", ".join(f"{code}: {n}" for code, n in sorted(row["attack_statuses"].items())) or "-"
        report.append(
            f"| {name} | {row['rate']:.1f} | {row['p50']:.1f} | {row['p99']:.1f} | {row['5xx']} "
            f"| {row['503']} | {row['health_max_ms']:.0f} | {answers} | {row['peak_rss_mb']:.0f} |"
        )
    return report, sum(row["5xx"] + row["503"] for row in rows.values())


def tiny_bundle(folder: Path) -> Path:
    """A second model to serve: a bundle with a linear head (it has heatmaps) on Lite0's input."""
    import numpy as np

    import imagenet_zoo
    from imagenet_zoo.models._keras import import_keras
    from imagenet_zoo.models.bundle import FEATURES_LAYER, save_bundle

    keras = import_keras()
    inputs = keras.Input((224, 224, 3))
    features = keras.layers.Identity(name=FEATURES_LAYER)(keras.layers.GlobalAveragePooling2D()(inputs))
    head = keras.layers.Dense(2, name="predictions")
    model = keras.Model(inputs, head(features), name="bundle")
    head.set_weights([np.eye(3, 2, dtype=np.float32), np.zeros(2, np.float32)])
    base = imagenet_zoo.get_model_spec("efficientnet_lite0")
    classes = ["reddish", "greenish"]
    return save_bundle(
        folder, model.save, num_params=model.count_params(), classes=classes, base=base, extra={}
    )


async def under_attack(url: str, pid: int, attack: object, seconds: float, bundle: Path) -> dict[str, object]:
    """Ordinary clients and health probes for `seconds`, with `attack` running alongside."""
    photo = sorted(SHARED.iterdir())[0].read_bytes()
    results: list[tuple[int, float]] = []
    health: list[float] = []
    peak = [rss_mb(pid)]
    statuses: dict[int, int] = {}
    stop = time.monotonic() + seconds
    async with httpx.AsyncClient(timeout=60) as client:

        async def ordinary() -> None:
            while time.monotonic() < stop:
                results.append(await timed_post(client, f"{url}/v1/classify", content=photo))

        async def probes() -> None:
            while time.monotonic() < stop:
                start = time.perf_counter()
                await client.get(f"{url}/healthz")
                health.append(time.perf_counter() - start)
                peak.append(rss_mb(pid))
                await asyncio.sleep(0.2)

        tasks = [ordinary() for _ in range(4)] + [probes()]
        if callable(attack):
            tasks.append(attack(url, stop, statuses, bundle))
        await asyncio.gather(*tasks)
    seconds_each = [s for _, s in results]
    return {
        "rate": len(results) / seconds,
        "p50": 1000 * percentile(seconds_each, 50),
        "p99": 1000 * percentile(seconds_each, 99),
        "5xx": sum(status >= 500 and status != 503 for status, _ in results),
        "503": sum(status == 503 for status, _ in results),
        "health_max_ms": 1000 * max(health, default=0.0),
        "attack_statuses": statuses,
        "peak_rss_mb": max(peak),
    }


async def many_images(url: str, stop: float, statuses: dict[int, int], bundle: Path) -> None:
    """v2 requests of 3,000 1x1 GIFs (0.13 MiB each) and of a million empty elements (4 MiB)."""
    element = base64.b64encode(GIF_1X1).decode()
    bodies = [
        json.dumps({"inputs": [{**V2_IMAGE, "shape": [count], "data": [data] * count}]}).encode()
        for count, data in ((3000, element), (1_000_000, ""))
    ]
    async with httpx.AsyncClient(timeout=60) as client:
        while time.monotonic() < stop:
            for body in bodies:
                response = await client.post(f"{url}/v2/models/efficientnet_lite0/infer", content=body)
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1


async def slow_bodies(url: str, stop: float, statuses: dict[int, int], bundle: Path) -> None:
    """16 connections, each declaring a 20 MB upload and sending one byte a second."""
    target = httpx.URL(url)

    async def trickle() -> None:
        reader, writer = await asyncio.open_connection(target.host, target.port)
        head = (
            f"POST /v1/classify HTTP/1.1\r\nHost: {target.host}\r\nContent-Type: image/jpeg\r\n"
            f"Content-Length: {20 * 2**20}\r\n\r\n"
        )
        writer.write(head.encode())
        try:
            while time.monotonic() < stop and not reader.at_eof():
                writer.write(b"\0")
                await writer.drain()
                await asyncio.sleep(1.0)
            if reader.at_eof() or reader._buffer:  # type: ignore[attr-defined]  # answered already
                status = int((await reader.readline()).split()[1])
                statuses[status] = statuses.get(status, 0) + 1
        except (ConnectionError, IndexError):
            statuses[0] = statuses.get(0, 0) + 1  # closed by the server
        finally:
            writer.close()

    await asyncio.gather(*(trickle() for _ in range(16)))


async def hang_ups(url: str, stop: float, statuses: dict[int, int], bundle: Path) -> None:
    """8 clients at a time that declare a photo's upload, send half of it and hang up, over and over (a
    flaky mobile network, or on purpose); then what the server counted them as (`/metrics`: 499, 5xx)."""
    target = httpx.URL(url)
    photo = sorted(SHARED.iterdir())[2].read_bytes()
    head = (
        f"POST /v1/classify HTTP/1.1\r\nHost: {target.host}\r\nContent-Type: image/jpeg\r\n"
        f"Content-Length: {len(photo)}\r\n\r\n"
    ).encode()

    async def hang_up_again_and_again() -> None:
        while time.monotonic() < stop:
            _, writer = await asyncio.open_connection(target.host, target.port)
            writer.write(head + photo[: len(photo) // 2])
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.close()
            statuses[0] = statuses.get(0, 0) + 1  # hung up before any answer

    await asyncio.gather(*(hang_up_again_and_again() for _ in range(8)))
    async with httpx.AsyncClient(timeout=60) as client:
        metrics = (await client.get(f"{url}/metrics")).text
    for line in metrics.splitlines():
        counted = re.match(
            r'imagenet_zoo_requests_total\{.*route="/v1/classify".*status="(\d+)"\} (\S+)', line
        )
        if counted and (counted[1] == "499" or counted[1].startswith("5")):
            statuses[int(counted[1])] = int(float(counted[2]))


async def thrash(url: str, stop: float, statuses: dict[int, int], bundle: Path) -> None:
    """Requests alternating between the two served models, with and without heatmaps (the page asks for
    them whenever it can), two at a time."""
    photo = sorted(SHARED.iterdir())[1].read_bytes()
    variants = [
        (model, explain) for model in ("efficientnet_lite0", str(bundle)) for explain in ("false", "true")
    ]
    async with httpx.AsyncClient(timeout=60) as client:

        async def alternate(offset: int) -> None:
            n = offset
            while time.monotonic() < stop:
                model, explain = variants[n % len(variants)]
                params = {"model": model, "explain": explain}
                response = await client.post(f"{url}/v1/classify", params=params, content=photo)
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                n += 1

        await asyncio.gather(alternate(0), alternate(1))


if __name__ == "__main__":
    main()
