"""Two OpenVINO IRs of one network, compiled side by side in one process and timed alternating: whether a
change to how IRs are built changed their speed.

    .venv/bin/python scripts/compare_irs.py OLD.xml NEW.xml [--hints f32 bf16] [--batches 1 8] [--rounds 5]

Prints a table: images/s of each (the median of the rounds), and new / old. Each IR is given the same
random pixels in the type it takes: uint8, or float32 scaled to [-1, 1] (IRs built before the engines
took uint8)."""

from __future__ import annotations

import argparse
import time

import numpy as np
import openvino as ov


def pixels_for(model: ov.CompiledModel, pixels: np.ndarray) -> np.ndarray:
    if model.inputs[0].get_element_type() == ov.Type.u8:
        return pixels
    return pixels.astype(np.float32) / np.float32(127.5) - np.float32(1.0)


def rate(request: ov.InferRequest, x: np.ndarray, seconds: float) -> float:
    for _ in range(3):
        request.infer({0: x})
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        request.infer({0: x})
        runs += 1
    return runs * len(x) / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--hints", nargs="+", default=["f32", "bf16"], help="INFERENCE_PRECISION_HINTs")
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.5, help="timed seconds per round and IR")
    args = parser.parse_args()
    core = ov.Core()
    print("| hint | batch | old img/s | new img/s | new / old |\n|---|---:|---:|---:|---:|")
    for hint in args.hints:
        config = {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY"}
        compiled = {name: core.compile_model(getattr(args, name), "CPU", config) for name in ("old", "new")}
        shape = [d.get_length() for d in compiled["old"].inputs[0].get_partial_shape()[1:]]
        for batch in args.batches:
            pixels = np.random.default_rng(0).integers(0, 256, (batch, *shape), dtype=np.uint8)
            x = {name: pixels_for(model, pixels) for name, model in compiled.items()}
            requests = {name: model.create_infer_request() for name, model in compiled.items()}
            rates: dict[str, list[float]] = {"old": [], "new": []}
            for round_ in range(args.rounds):
                for name in ("old", "new") if round_ % 2 == 0 else ("new", "old"):
                    rates[name].append(rate(requests[name], x[name], args.seconds))
            old, new = (float(np.median(rates[name])) for name in ("old", "new"))
            print(f"| {hint} | {batch} | {old:.1f} | {new:.1f} | {new / old:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
