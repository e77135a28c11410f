"""What runs many photos: the folder job on one machine (`folder`) or on a Ray cluster (`cluster`), results
files, annotated copies, and the evaluate / compare / bench jobs. The CLI only parses and prints."""
