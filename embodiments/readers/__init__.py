"""Readers of real datasets: each maps a dataset's files to an `Episode` with its modality's raw stream."""
