"""The HTTP service and its web page."""

from imagenet_zoo.server.app import create_app
from imagenet_zoo.server.settings import Settings

__all__ = ["Settings", "create_app"]
