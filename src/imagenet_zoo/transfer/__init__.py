"""Transfer learning: pooled features of an ImageNet network (`features`), new heads trained on them
(`training`, `heads`), and the bundles that carry the result wherever a zoo model goes (`bundles`)."""
