"""The names an exported model's input and output have in every format (and in `model.json`)."""

INPUT_NAME = "pixels"  # uint8, NHWC, RGB: photos resized and cropped as model.json says
OUTPUT_NAME = "probabilities"  # float32, (rows, classes), the classes in model.json's order
