"""Test images for the batch restoration tests: every kind the job must carry through (gray,
alpha, 16-bit, ICC, EXIF orientation, palette, several formats) and every kind of bad file."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageCms

from restoration.io.codec import DecodedImage
from restoration.io.encode import encode_image

ORIENTATION_TAG = 0x0112


@dataclass(frozen=True)
class Expect:
    """What the output of one good input must look like (after EXIF orientation)."""

    width: int
    height: int
    channels: int
    bit_depth: int = 8
    alpha: bool = False
    icc: bytes | None = None
    lossless: bool = True  # the output format stores pixels exactly


def srgb_profile() -> bytes:
    """An sRGB ICC profile. Its header holds the time it was made: call once per expected value."""
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def png(pixels: np.ndarray, **options) -> bytes:
    buffer = io.BytesIO()
    image = Image.fromarray(pixels[:, :, 0] if pixels.ndim == 3 and pixels.shape[2] == 1 else pixels)
    image.save(buffer, format="PNG", **options)
    return buffer.getvalue()


def jpeg_with_orientation(pixels: np.ndarray, orientation: int) -> bytes:
    """A JPEG whose stored pixels are ``pixels`` rotated so that EXIF ``orientation`` undoes it."""
    stored = {6: np.rot90(pixels, k=1), 8: np.rot90(pixels, k=-1), 3: pixels[::-1, ::-1]}[orientation]
    exif = Image.Exif()
    exif[ORIENTATION_TAG] = orientation
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(stored)).save(buffer, format="JPEG", quality=95, exif=exif.tobytes())
    return buffer.getvalue()


def variants(rgb: np.ndarray, gray: np.ndarray) -> dict[str, tuple[bytes, Expect]]:
    """Good inputs of every supported kind, built from an 8-bit RGB and an 8-bit gray image
    (HxWx3 and HxW), keyed by a relative path."""
    h, w = rgb.shape[:2]
    gh, gw = gray.shape[:2]
    alpha = np.tile(np.linspace(0, 255, w, dtype=np.uint8), (h, 1))
    alpha[: h // 4] = 0  # fully transparent band, fully opaque elsewhere at the right edge
    rgb16 = rgb.astype(np.uint16) * 257
    gray16 = gray.astype(np.uint16) * 257 + 7
    palette = Image.fromarray(rgb).quantize(colors=32)
    palette.info["transparency"] = 0
    palette_bytes = io.BytesIO()
    palette.save(palette_bytes, format="PNG", transparency=0)
    webp = io.BytesIO()
    Image.fromarray(rgb).save(webp, format="WEBP", lossless=True)
    tiff = io.BytesIO()
    Image.fromarray(rgb).save(tiff, format="TIFF")
    icc = srgb_profile()  # one profile: two would differ in their creation time when a second ticks between
    return {
        "kinds/rgb.png": (png(rgb), Expect(w, h, 3)),
        "kinds/gray.png": (png(gray), Expect(gw, gh, 1)),
        "kinds/rgba.png": (png(np.dstack([rgb, alpha])), Expect(w, h, 3, alpha=True)),
        "kinds/rgb16.png": (
            encode_image(DecodedImage(pixels=rgb16, alpha=None, mode="RGB", format="PNG")),
            Expect(w, h, 3, bit_depth=16),
        ),
        "kinds/gray16.png": (
            encode_image(DecodedImage(pixels=gray16[:, :, None], alpha=None, mode="I;16", format="PNG")),
            Expect(gw, gh, 1, bit_depth=16),
        ),
        "kinds/icc.png": (png(rgb, icc_profile=icc), Expect(w, h, 3, icc=icc)),
        "kinds/rotated.jpg": (jpeg_with_orientation(rgb, 6), Expect(w, h, 3, lossless=False)),
        "kinds/palette.png": (palette_bytes.getvalue(), Expect(w, h, 3, alpha=True)),
        "kinds/lossless.webp": (webp.getvalue(), Expect(w, h, 3, lossless=False)),  # written lossy (quality)
        "kinds/deep/plain.tif": (tiff.getvalue(), Expect(w, h, 3)),
    }


def bad_files(rgb: np.ndarray) -> dict[str, tuple[bytes, str, str]]:
    """Inputs that must become error rows: path -> (bytes, error stage, reason substring)."""
    jpeg = io.BytesIO()
    Image.fromarray(rgb).save(jpeg, format="JPEG", quality=90)
    float_tiff = io.BytesIO()
    Image.fromarray(rgb[:, :, 0].astype(np.float32)).save(float_tiff, format="TIFF")
    rng = np.random.default_rng(0)
    return {
        "bad/corrupt.png": (b"\x89PNG\r\n\x1a\n" + rng.bytes(300), "decode", "corrupt"),
        "bad/truncated.jpg": (jpeg.getvalue()[: len(jpeg.getvalue()) // 3], "decode", "truncated"),
        "bad/empty.png": (b"", "decode", "empty"),
        "bad/notes.jpg": (b"these are not the pixels you are looking for\n" * 4, "decode", "not a recognized image"),
        "bad/float.tif": (float_tiff.getvalue(), "decode", "mode F"),
    }


def oversize_png(width: int, height: int) -> bytes:
    return png(np.full((height, width, 3), 128, np.uint8))


def decode_pil(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image
