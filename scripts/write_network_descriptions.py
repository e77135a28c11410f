"""Write the zoo networks' descriptions (`imagenet_zoo.models.described`) from Keras, for every model that
ships one: run after a family's builder changes (`tests/test_described.py` fails until then).

    .venv/bin/python scripts/write_network_descriptions.py
"""

import gzip
import json

from imagenet_zoo.models import ALL_MODELS
from imagenet_zoo.models.described import FORMAT, describe, description_path, fresh_network


def main() -> None:
    for model in ALL_MODELS:
        document = {"format": FORMAT, "model": model.spec.name}
        for task in ("classify", "features"):
            document[task] = describe(fresh_network(model, task))
        text = json.dumps(document, separators=(",", ":"), sort_keys=True).encode()
        path = description_path(model.spec.name)
        # mtime=0: the same description gives the same bytes.
        path.write_bytes(gzip.compress(text, compresslevel=9, mtime=0))
        print(f"{path}: {len(text):,} bytes, {path.stat().st_size:,} packed")


if __name__ == "__main__":
    main()
