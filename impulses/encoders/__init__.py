"""Encoders: backbone registry, projector, augmentations, contrastive losses, pretraining.

Public names: :func:`create_encoder`, :func:`list_encoders`, :func:`register_encoder`,
:func:`load_encoder` and :class:`LoadedEncoder`. Losses live in :mod:`impulses.encoders.losses`,
augmentations in :mod:`impulses.encoders.augment`, the training loop in :mod:`impulses.encoders.pretrain`.
"""

from impulses.encoders.load import LoadedEncoder, load_encoder
from impulses.encoders.registry import create_encoder, list_encoders, register_encoder

__all__ = ["LoadedEncoder", "create_encoder", "list_encoders", "load_encoder", "register_encoder"]
