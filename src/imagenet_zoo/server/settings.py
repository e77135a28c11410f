"""Service settings: one immutable object handed to `create_app`, so tests build the real app their way."""

from __future__ import annotations

import stat
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from imagenet_zoo.engines.batching import BatchingOptions
from imagenet_zoo.engines.registry import choose_engine
from imagenet_zoo.errors import UsageError
from imagenet_zoo.pipeline import LoadConfig
from imagenet_zoo.registry import Registry

MIN_KEY_LENGTH = 16


def read_api_keys(path: Path, warn: Callable[[str], None] = lambda message: None) -> tuple[str, ...]:
    """The keys in a file, one per line (blank lines and `#` comments skipped). Errors never quote a key.

    A key is what a client can send in an HTTP header (visible ASCII, no spaces): any other character can
    never match, so such a key is refused. A file other users may read is accepted with a `warn`ing, as
    ssh warns of an unprotected key."""
    try:
        mode = path.stat().st_mode
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read the API key file {path}: {type(exc).__name__}") from None
    keys = tuple(line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#"))
    if not keys:
        raise UsageError(f"{path} holds no API key")
    if any(
        len(key) < MIN_KEY_LENGTH or not (key.isascii() and key.isprintable()) or " " in key for key in keys
    ):
        raise UsageError(
            f"{path}: every key must be at least {MIN_KEY_LENGTH} visible ASCII characters without spaces "
            "(what an Authorization header can carry)"
        )
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        warn(f"{path} is open to other users (mode {stat.S_IMODE(mode):04o}): `chmod 600 {path}`")
    return keys


# The defaults of `max_queue` and `max_batch_size` on each kind of device.
CPU_MAX_QUEUE, GPU_MAX_QUEUE = 32, 256
CPU_MAX_BATCH, GPU_MAX_BATCH = 8, 64

# Decoded pixels an upload may hold, below the command line's 64 MP: a 48-MP phone photo fits.
SERVICE_MAX_PIXELS = 50_000_000


@dataclass(frozen=True)
class Settings:
    models: tuple[str, ...] = ("efficientnet_lite0",)  # the first is the default, loaded before /readyz
    # How every served model is loaded (its `model` is each of `models` in turn): engine, precision,
    # device, decode ("full": every pixel of every upload), the pixel cap of an upload.
    load: LoadConfig = field(default_factory=lambda: LoadConfig(max_pixels=SERVICE_MAX_PIXELS))
    max_upload_mb: float = 20.0
    # Bytes of uploads being read at once (each request counts its declared length, or max_upload_mb if
    # it declares none); a request past it gets 503 at once: small photos from many clients, few 20 MB ones.
    max_upload_buffer_mb: float = 256.0
    # Requests waiting for or in inference; more get 503 at once (None: the device's default).
    max_queue: int | None = None
    max_batch_files: int = 16
    deadline_s: float = 30.0  # past this a request gets 504
    # A body that takes longer than this to arrive, or waits longer than `body_idle_timeout_s` for its
    # next chunk, is answered 408: a slow client never holds a connection and its buffer for long.
    body_timeout_s: float = 120.0
    body_idle_timeout_s: float = 15.0
    max_loaded_models: int = 2  # least recently used models are unloaded beyond this many...
    max_model_memory_mb: float = 2048.0  # ...or beyond this much weight memory (fp32 parameters)
    decode_threads: int | None = None  # threads decoding uploads (default: one per core)
    # Images one engine call may hold, from any requests (1: no batching; None: the device's default).
    max_batch_size: int | None = None
    max_batch_delay_ms: float = 2.0  # how long an image waits for others to share its engine call
    registry: Registry | None = None
    # Bearer tokens a request to the API must carry (`--api-key-file`); empty: no authentication.
    # Never shown: not in this object's repr, not in logs, not in any answer.
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    cors_origins: tuple[str, ...] = ()  # browser origins allowed to call the API (`--cors-origin`)

    def with_engine_chosen(self) -> Settings:
        """These settings with an `auto` engine and device chosen for a service (a long run: the GPU
        where there is one), so that every model, route and report names what really runs."""
        choice = choose_engine(self.load.engine, self.load.device, photos=None)
        return replace(self, load=replace(self.load, engine=choice.engine, device=choice.device))

    @property
    def queue_limit(self) -> int:
        """`max_queue`, or the device's default: a GPU answers 64 clients at once where 2 cores answer 16."""
        return self.max_queue or (GPU_MAX_QUEUE if self.load.device == "cuda" else CPU_MAX_QUEUE)

    @property
    def batch_limit(self) -> int:
        """`max_batch_size`, or the device's default: a GPU's engine call of 64 costs little more than
        one of 8, a CPU's costs 8 times as much."""
        return self.max_batch_size or (GPU_MAX_BATCH if self.load.device == "cuda" else CPU_MAX_BATCH)

    @property
    def batching(self) -> BatchingOptions:
        return BatchingOptions(self.batch_limit, self.max_batch_delay_ms / 1000)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)

    @property
    def max_upload_buffer_bytes(self) -> int:
        return int(self.max_upload_buffer_mb * 2**20)
