"""Weights: where they are cached, how they are downloaded and verified, and how foreign formats convert."""

from imagenet_zoo.weights.store import ConvertedPackageWeights, DownloadedWeights, WeightsProvider, cache_dir

__all__ = ["ConvertedPackageWeights", "DownloadedWeights", "WeightsProvider", "cache_dir"]
