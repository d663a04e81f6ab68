"""Measuring what a representation knows: probes of the physics state from frozen features."""
