"""ssrl: self-supervised representation learning for reinforcement learning and robotics."""

__version__ = "0.1.0"


def __getattr__(name: str):  # lazy, so `import ssrl` stays light
    if name == "load_backbone":
        from ssrl.nn.backbone import load_backbone

        return load_backbone
    raise AttributeError(f"module 'ssrl' has no attribute {name!r}")
