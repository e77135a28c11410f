"""Atheris (libFuzzer) harness for the decode path: every input decodes or raises a typed image error.

    python tests/fuzz/decode_fuzzer.py CORPUS_DIR -max_total_time=600 -timeout=10 -rss_limit_mb=1024

Each input goes through `prepare_input` in both decode modes, as every photo the tool reads does. An
exception other than `ImageError` (which `prepare_input` turns into the photo's error), a hang past
-timeout, or memory past -rss_limit_mb is a finding: libFuzzer saves the input as crash-* / timeout-* /
oom-*. tests/test_fuzz_decode.py runs this for a bounded time and replays tests/fuzz/regressions/.
"""

import sys
import warnings

import atheris

with atheris.instrument_imports():
    import PIL.Image  # noqa: F401  (Pillow's Python-side parsers are instrumented for coverage)

    from imagenet_zoo.classifier import ErrorInfo, prepare_input
    from imagenet_zoo.data.images import DEFAULT_MAX_PIXELS
    from imagenet_zoo.specs import DataConfig

CONFIG = DataConfig(input_size=224, mode="lite")


def check(data: bytes) -> None:
    for decode in ("fast", "full"):
        result = prepare_input(data, CONFIG, max_pixels=DEFAULT_MAX_PIXELS, decode=decode)  # type: ignore[arg-type]
        assert isinstance(result, ErrorInfo) or result[1].shape == (224, 224, 3)


def main() -> None:
    warnings.simplefilter("ignore")  # Pillow warns about odd files; only exceptions matter here
    atheris.Setup(sys.argv, check)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
