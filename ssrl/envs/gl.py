"""Headless OpenGL backend selection and rendering settings for MuJoCo.

`configure()` must run before `mujoco` or `dm_control` is first imported: both read
`MUJOCO_GL` at import time (and then set `PYOPENGL_PLATFORM` to match themselves).
"""

from __future__ import annotations

import contextlib
import ctypes.util
import os
from collections.abc import Iterator
from typing import Any

_INSTALL = {
    "egl": "apt-get install -y libegl1 libegl-mesa0 libgl1-mesa-dri",
    "osmesa": "apt-get install -y libosmesa6",
}


def configure() -> str | None:
    """Sets `MUJOCO_GL` to egl or osmesa (whichever library is found) unless it is set.

    Returns the backend in effect, or None when none was found (rendering will then fail).
    """
    if "MUJOCO_GL" not in os.environ:
        for backend, library in (("egl", "EGL"), ("osmesa", "OSMesa")):
            if ctypes.util.find_library(library):
                os.environ["MUJOCO_GL"] = backend
                break
    return os.environ.get("MUJOCO_GL")


@contextlib.contextmanager
def context_errors() -> Iterator[None]:
    """Re-raises any failure to create a GL context as a RuntimeError that says what to install."""
    try:
        yield
    except Exception as error:
        backend = os.environ.get("MUJOCO_GL")
        tried = f"MUJOCO_GL={backend!r}" if backend else "no MUJOCO_GL (neither libEGL nor libOSMesa found)"
        raise RuntimeError(
            f"Could not create a MuJoCo OpenGL rendering context with {tried}: {error!r}. "
            f"For EGL (software or GPU): `{_INSTALL['egl']}` and `export MUJOCO_GL=egl`; "
            f"for OSMesa (software): `{_INSTALL['osmesa']}` and `export MUJOCO_GL=osmesa`. "
            "Set MUJOCO_GL before mujoco or dm_control is imported."
        ) from error


def set_look(model: Any, look: str, buffer_size: int) -> None:
    """Sets a MuJoCo model's offscreen rendering options; call before its first render.

    "fast": no MSAA, shadows or reflections, and an offscreen buffer of `buffer_size`
    (about 10x faster on software GL). "dmc": the model's own look, with the buffer only
    grown if it is smaller than `buffer_size`.
    """
    vis = model.vis.global_
    if look == "fast":
        vis.offwidth = vis.offheight = buffer_size
        model.vis.quality.offsamples = 0
        model.light_castshadow[:] = 0
        model.mat_reflectance[:] = 0
    else:
        vis.offwidth = max(vis.offwidth, buffer_size)
        vis.offheight = max(vis.offheight, buffer_size)
