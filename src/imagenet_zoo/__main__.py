"""`python -m imagenet_zoo` is the `imagenet-zoo` command."""

import sys

from imagenet_zoo.cli import main

sys.exit(main())
