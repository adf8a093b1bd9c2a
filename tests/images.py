"""Test images and shards: real photos from scikit-image, plus every kind of bad input."""

from __future__ import annotations

import io
import json
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


def shard_with_references(path: str, keys: list[str], references: dict[str, list[str]], real_jpg: str | None) -> str:
    """A webdataset tar: key.jpg + key.json; the real COCO photo (a real JPEG to decode; it is not
    the photo these captions describe) for the last key, drawn pictures for the others."""
    from PIL import ImageDraw

    with tarfile.open(path, "w") as tar:
        for n, key in enumerate(keys):
            if n == len(keys) - 1 and real_jpg:
                with open(real_jpg, "rb") as f:
                    data = f.read()
            else:
                im = Image.new("RGB", (320, 240), (40 + 13 * n % 200, 90, 160 - 7 * n % 120))
                d = ImageDraw.Draw(im)
                d.ellipse((60 + n % 50, 40, 220, 200), fill=(230, 200 - 5 * n % 150, 40))
                d.rectangle((10, 150, 120, 230), fill=(20, 120 + 3 * n % 100, 60))
                buf = io.BytesIO()
                im.save(buf, "JPEG", quality=85)
                data = buf.getvalue()
            for name, payload in ((f"{key}.jpg", data),
                                  (f"{key}.json", json.dumps({"captions": references.get(key, [])}).encode())):
                info = tarfile.TarInfo(name)
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    return path
