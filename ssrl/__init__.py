"""ssrl: self-supervised representation learning for reinforcement learning and robotics."""

__version__ = "0.1.0"
