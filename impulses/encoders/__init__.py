"""Encoders: backbone registry, projector, augmentations, contrastive losses, pretraining."""
