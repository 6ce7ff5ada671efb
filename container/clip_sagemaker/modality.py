"""The two modalities: the model's two towers, and the two kinds of job its loop batches.

A leaf: the model, the engine and the tasks all name modalities, so these live below all of them.
"""
TEXT = "text"
IMAGE = "image"
