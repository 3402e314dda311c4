"""Positive-unlabeled learning on any feature matrix: label sets, losses, linear heads, metrics."""
