"""Dataset sources: images (and their ids, classes) read from a dataset spec such as ``digits``.

Both the encoder stage (pretraining) and the embedding cache read images through these sources,
so they live below both: ``impulses.data`` <- ``impulses.encoders`` <- ``impulses.embed``.
"""
