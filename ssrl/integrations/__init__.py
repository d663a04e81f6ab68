"""Adapters that let other RL libraries use ssrl parts (``ssrl.integrations.sb3``: Stable-Baselines3)."""
