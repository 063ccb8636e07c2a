"""Decoding and validation of predict/explain inputs.

Every rejection raises ``InputError`` with the HTTP status and a message
that names the bad value and the fix; nothing here touches server state.
Pixels are floats in [0, 1] with 0 for the background and 1 for ink, like
MNIST after ``ToTensor``.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from helpers.data import MNIST_MEAN, MNIST_STD

SIDE = 28
ALLOWED_IMAGE_FORMATS = ("PNG", "JPEG")


class InputError(ValueError):
    """An invalid request input; ``status`` is the HTTP status of the error response."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def pixels_from_json(value: object, max_images: int) -> torch.Tensor:
    """Return float32 [N, 1, 28, 28] in [0, 1] from nested JSON lists.

    Accepted shapes: [28, 28] or [784] (one image), [N, 28, 28] or [N, 784].
    """
    if value is None:
        raise InputError(422, 'missing field "pixels"; send {"pixels": [[...28 numbers...], ...28 rows]}')
    if isinstance(value, (int, float, str, bool, dict)):
        raise InputError(422, f'"pixels" must be a nested list of numbers, got {type(value).__name__}')
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            array = np.asarray(value)
    except (ValueError, TypeError, np.exceptions.VisibleDeprecationWarning):
        raise InputError(
            422, '"pixels" is ragged: every row must have the same length (28 numbers per row, or 784 per image)'
        ) from None
    if array.dtype.kind not in "iuf":
        kind = {"b": "booleans", "U": "strings", "O": "mixed or null values"}.get(array.dtype.kind, str(array.dtype))
        raise InputError(422, f'"pixels" must contain only numbers, found {kind}')
    if array.size == 0:
        check_count(0, max_images)
    array = array.astype(np.float32)
    shape = tuple(array.shape)
    if shape in ((SIDE, SIDE), (SIDE * SIDE,)):
        array = array.reshape(1, SIDE, SIDE)
    elif (array.ndim == 3 and shape[1:] == (SIDE, SIDE)) or (array.ndim == 2 and shape[1] == SIDE * SIDE):
        array = array.reshape(-1, SIDE, SIDE)
    else:
        raise InputError(
            422, f'"pixels" has shape {list(shape)}; expected [28, 28], [784], [N, 28, 28] or [N, 784]'
        )
    check_count(array.shape[0], max_images)
    if not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise InputError(422, f'"pixels" contains {bad} NaN or infinite values; send finite numbers in [0, 1]')
    low, high = float(array.min()), float(array.max())
    if low < 0.0 or high > 1.0:
        hint = " (0-255 values must be divided by 255)" if high > 1.0 else ""
        raise InputError(422, f'"pixels" must be in [0, 1], found values from {low:g} to {high:g}{hint}')
    return torch.from_numpy(array).unsqueeze(1)


def check_count(count: int, max_images: int) -> None:
    """Reject an empty batch or one larger than ``max_images``."""
    if count == 0:
        raise InputError(422, "the request contains no images; send at least one")
    if count > max_images:
        raise InputError(
            422, f"the request contains {count} images, more than the limit of {max_images}; split it into smaller batches"
        )


def pixels_from_image(data: bytes, filename: str, max_side: int) -> torch.Tensor:
    """Return float32 [1, 28, 28] in [0, 1] from PNG or JPEG bytes.

    A light background (mean above 0.5) is inverted to MNIST's white-on-black.
    A 28x28 image is used as is; any other size is fitted the way MNIST was
    made: the digit's bounding box is scaled to fit 20x20 and placed in a
    28x28 field with its centre of mass at the centre.
    """
    if not data:
        raise InputError(422, f"uploaded file {filename!r} is empty")
    try:
        image = Image.open(io.BytesIO(data))
        if image.format not in ALLOWED_IMAGE_FORMATS:
            raise InputError(415, f"uploaded file {filename!r} is {image.format}; send a PNG or JPEG image")
        width, height = image.size
        if width > max_side or height > max_side:
            raise InputError(
                413, f"uploaded image {filename!r} is {width}x{height} pixels; the limit is {max_side}x{max_side}"
            )
        image.load()
    except InputError:
        raise
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, SyntaxError, ValueError) as error:
        # The exception text may contain object addresses, so only its type is shown.
        raise InputError(
            422, f"uploaded file {filename!r} is not a decodable PNG or JPEG image ({type(error).__name__})"
        ) from None

    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent pixels count as background (white, before inversion).
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    gray = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    if gray.mean() > 0.5:
        gray = 1.0 - gray
    if gray.shape != (SIDE, SIDE):
        gray = fit_like_mnist(gray)
    return torch.from_numpy(np.ascontiguousarray(gray)).reshape(1, SIDE, SIDE)


def fit_like_mnist(gray: np.ndarray) -> np.ndarray:
    """Scale a white-on-black digit into a 20x20 box centred by mass in 28x28."""
    mask = gray > 0.1
    if not mask.any():
        return np.zeros((SIDE, SIDE), dtype=np.float32)
    rows, cols = np.nonzero(mask)
    crop = gray[rows.min(): rows.max() + 1, cols.min(): cols.max() + 1]
    height, width = crop.shape
    scale = 20.0 / max(height, width)
    new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = Image.fromarray((crop * 255).astype(np.uint8)).resize(new_size, Image.Resampling.LANCZOS)
    small = np.asarray(resized, dtype=np.float32) / 255.0

    field = np.zeros((SIDE, SIDE), dtype=np.float32)
    top, left = (SIDE - small.shape[0]) // 2, (SIDE - small.shape[1]) // 2
    field[top: top + small.shape[0], left: left + small.shape[1]] = small
    total = field.sum()
    if total > 0:
        ys, xs = np.indices(field.shape)
        shift_y = int(round(SIDE / 2 - 0.5 - (ys * field).sum() / total))
        shift_x = int(round(SIDE / 2 - 0.5 - (xs * field).sum() / total))
        field = _shift(field, shift_y, shift_x)
    return field


def _shift(field: np.ndarray, dy: int, dx: int) -> np.ndarray:
    out = np.zeros_like(field)
    height, width = field.shape
    src_y = slice(max(0, -dy), min(height, height - dy))
    dst_y = slice(max(0, dy), min(height, height + dy))
    src_x = slice(max(0, -dx), min(width, width - dx))
    dst_x = slice(max(0, dx), min(width, width + dx))
    out[dst_y, dst_x] = field[src_y, src_x]
    return out


def normalize(pixels: torch.Tensor) -> torch.Tensor:
    """Map [0, 1] pixels to the models' input scale (MNIST mean and std)."""
    return (pixels - MNIST_MEAN) / MNIST_STD
