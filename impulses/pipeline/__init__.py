"""Orchestration across stages: the experiment protocol, end-to-end baselines, reports (imports encoders, embed and pu)."""
