"""Test images and shards: real photos from scikit-image, plus every kind of bad input."""

from __future__ import annotations

import io
import os
import tarfile

import numpy as np
from PIL import Image

SKIMAGE_PHOTOS = ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "motorcycle_left.png",
                  "hubble_deep_field.jpg", "camera.png", "horse.png", "coins.png", "brick.png")


def skimage_photo_paths() -> list[str]:
    import skimage.data

    root = os.path.dirname(skimage.data.__file__)
    return [os.path.join(root, name) for name in SKIMAGE_PHOTOS if os.path.exists(os.path.join(root, name))]


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def random_rgb(size=(64, 48), seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def write_tar(path: str, members: list[tuple[str, bytes]]) -> str:
    """A tar with the given (name, bytes) members, in order (webdataset layout)."""
    with tarfile.open(path, "w") as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def jpeg_shard(path: str, n: int, size=(64, 48), start_seed=0) -> str:
    return write_tar(path, [(f"img{i:05d}.jpg", encode(random_rgb(size, start_seed + i), "JPEG")) for i in range(n)])
