"""Load test of `imagenet-zoo serve` on loopback: latency and throughput, a full queue, memory under abuse.

Starts its own servers on 127.0.0.1 (never another address), bounded in requests and seconds per phase:

1. real photos at concurrency 1, 4 and 16: p50/p95/p99 latency and throughput, counting any 5xx, sent by
   a lean client (`send_all`) so that the generator takes little of the CPU the server shares with it;
2. a server with a 2-slot queue flooded by 24 concurrent requests: the overflow must get 503 at once;
3. 5,000 bad requests (empty, text, truncated JPEG, decompression bomb, oversized): the server's resident
   memory is sampled along the way and must stay flat;
4. abuse: 16-file batches of a 1x100,000-pixel PNG (under 500 bytes each), and 20 MB uploads 32 at a
   time (more than the server reads at once): every answer typed, no 5xx, memory sampled.

Prints a markdown report. Usage: python scripts/load_test.py [--requests N] [--bad-requests N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.3)
        else:
            raise SystemExit("the server did not become ready")
        yield url, process.pid
    finally:
        process.terminate()
        process.wait(timeout=60)


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
classifier.classify_many(paths[:16])
start = time.perf_counter()
assert all(r.ok for r in classifier.classify_many(paths))
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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=200, help="photo requests per concurrency level")
    parser.add_argument("--bad-requests", type=int, default=5000)
    parser.add_argument(
        "--precision", action="append", choices=("fp32", "bf16", "int8"),
        help="precisions to measure throughput in (default fp32 and int8; int8 is quantized if needed)",
    )  # fmt: skip
    args = parser.parse_args()
    args.precision = args.precision or ["fp32", "int8"]
    report = [
        f"Load test of `imagenet-zoo serve` (EfficientNet-Lite0, OpenVINO), {os.cpu_count()} cores, "
        f"{cpu_model()}:",
        "",
    ]
    server_errors = 0

    folder = {precision: folder_job_rate(precision, args.requests) for precision in args.precision}
    report += [
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
        "Folder job on the same photos, same process kind (a loaded classifier's `classify_many`): "
        + ", ".join(f"{p} {rate:.1f} img/s" for p, rate in folder.items())
        + ".",
    ]

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
        server_errors += sum(n for status, n in statuses.items() if status >= 500)
        codes = ", ".join(f"{code}: {n}" for code, n in sorted(statuses.items()))
        report += [
            "",
            f"{args.bad_requests:,} bad requests, half of them to /v2 ({codes}); RSS after each fifth: "
            + " -> ".join(f"{r:.0f}" for r in rss)
            + f" MB (growth {rss[-1] - rss[1]:+.0f} MB after the first fifth).",
        ]

        rss = [rss_mb(pid)]
        statuses = {}
        for _ in range(
            3
        ):  # the same abuse three times: memory rises to the upload buffer's bound, then stays
            for status, n in asyncio.run(abuse(url)).items():
                statuses[status] = statuses.get(status, 0) + n
            rss.append(rss_mb(pid))
        server_errors += sum(n for status, n in statuses.items() if status >= 500 and status != 503)
        codes = ", ".join(f"{code}: {n}" for code, n in sorted(statuses.items()))
        report += [
            "",
            f"Abuse, three rounds of 16-file sliver batches and 20 MB uploads ({codes}); server RSS "
            + " -> ".join(f"{r:.0f}" for r in rss)
            + " MB (--max-upload-buffer-mb 256: uploads read at once, each held twice while it is joined).",
        ]

    with server("--max-queue", "2", "--deadline", "120") as (url, _):
        held, probes = asyncio.run(full_queue(url))
        refused = [seconds for status, seconds in probes if status == 503]
        server_errors += sum(status >= 500 and status != 503 for status, _ in probes)
        report += [
            "",
            f"Full queue (2 slots, both held by 16-photo batches that took {held:.2f} s): "
            f"{len(probes)} single-photo requests sent meanwhile, {len(refused)} refused with 503 "
            f"(Retry-After) in median {1000 * statistics.median(refused or [0]):.1f} ms, "
            f"at most {1000 * max(refused, default=0):.1f} ms.",
        ]

    report += ["", f"5xx other than the queue's 503: {server_errors}"]
    print("\n".join(report))
    sys.exit(1 if server_errors else 0)


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


if __name__ == "__main__":
    main()
