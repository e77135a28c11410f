"""Atheris (libFuzzer) harness for the decode path: every input decodes or raises a typed image error.

    python tests/fuzz/decode_fuzzer.py CORPUS_DIR -max_total_time=600 -timeout=10 -rss_limit_mb=0

Each input goes through `model_input` in both decode modes, as every photo the tool reads does. An
exception other than `ImageError` (which the pipeline turns into the photo's error), a hang past
-timeout, or resident memory past MAX_RSS_MB is a finding: libFuzzer saves the input as crash-* / timeout-* /
oom-*. tests/test_fuzz_decode.py runs this for a bounded time and replays tests/fuzz/regressions/.
"""

import sys
import warnings

import atheris

with atheris.instrument_imports():
    import PIL.Image  # noqa: F401  (Pillow's Python-side parsers are instrumented for coverage)

    from imagenet_zoo.data.preprocess import model_input
    from imagenet_zoo.errors import ImageError
    from imagenet_zoo.specs import DataConfig

CONFIG = DataConfig(input_size=224, mode="lite")
# Below the default 64 MP cap, under which one legitimate photo with alpha may take about 1 GB while it
# is converted: with 16 MP, memory past MAX_RSS_MB means growth, not one large allowed image (a 600 s
# run at the default cap reached 1,266 MB after 95,520 inputs, each alone well within its bound).
MAX_PIXELS = 16_000_000


MAX_RSS_MB = 1024
_runs = 0


def check(data: bytes) -> None:
    global _runs
    _runs += 1
    if _runs % 200 == 0 and _resident_mb() > MAX_RSS_MB:  # growth: a finding (libFuzzer saves the input)
        raise MemoryError(f"resident memory {_resident_mb():.0f} MB after {_runs} inputs")
    for decode in ("fast", "full"):
        try:
            _, pixels = model_input(data, CONFIG, max_pixels=MAX_PIXELS, decode=decode)  # type: ignore[arg-type]
        except ImageError:
            continue  # the photo's error: what the pipeline reports for it
        assert pixels.shape == (224, 224, 3)


def _resident_mb() -> float:
    """This process's current resident memory. libFuzzer's own -rss_limit_mb reads the peak from
    getrusage, which includes the process it was started from (a large pytest, late in a test run)."""
    with open("/proc/self/status") as status:
        return int(next(line.split()[1] for line in status if line.startswith("VmRSS:"))) / 1024


def main() -> None:
    warnings.simplefilter("ignore")  # Pillow warns about odd files; only exceptions matter here
    atheris.Setup(sys.argv, check)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
