"""Gymnasium environments as training data: `astra record`, the action mappings, the pybullet arm."""
