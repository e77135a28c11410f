"""Weights: where they are cached, how they are downloaded and verified, and how their files are read."""

from imagenet_zoo.weights.store import DownloadedWeights, PackagedWeights, WeightsProvider, cache_dir

__all__ = ["DownloadedWeights", "PackagedWeights", "WeightsProvider", "cache_dir"]
