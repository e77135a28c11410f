"""The input and label contract: decoding photos (`images`), turning them into a model's input
(`preprocess`), and the class names a model's outputs mean (`labels`). Nothing here imports an engine."""
