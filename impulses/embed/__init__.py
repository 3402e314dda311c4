"""Embedding cache: dataset sources, the HDF5 store and frozen-encoder extraction."""
