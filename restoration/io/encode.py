"""Pixel arrays -> image bytes: PNG (8 and 16-bit), JPEG, WebP, TIFF (8 and 16-bit) and BMP,
with alpha, the ICC profile and the descriptive metadata (EXIF, XMP, IPTC) carried over.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

import numpy as np
from PIL import Image, features

from restoration.io.codec import PNG_SIGNATURE, DecodedImage, icc_matches
from restoration.io.metadata import (
    NO_METADATA,
    ImageMetadata,
    metadata_for_output,
    pillow_metadata_options,
    png_metadata_chunks,
    with_tiff_metadata,
)
from restoration.io.pixels import to_uint8

ENCODE_FORMATS: Final[frozenset[str]] = frozenset({"PNG", "JPEG", "WEBP", "TIFF", "BMP"})
"""Formats :func:`encode_image` writes, as Pillow names them."""

FORMAT_ALIASES: Final[Mapping[str, str]] = MappingProxyType(
    {"JPG": "JPEG", "JPE": "JPEG", "MPO": "JPEG", "TIF": "TIFF"}
)
"""Other names of the formats, upper case -> the name Pillow uses. ``MPO`` is what Pillow reports
for the multi-picture JPEGs of phones and stereo cameras; its first picture is a plain JPEG."""

PNG_COMPRESSION_LEVELS: Final[range] = range(0, 10)
"""zlib levels :func:`encode_image` accepts for PNG: 0 stores, 1 is fastest, 9 is smallest."""


# --------------------------------------------------------------------------------------------
# Encoding


def normalize_format(name: str) -> str:
    """A format name as Pillow spells it: upper case, aliases resolved (``"jpg"`` -> ``"JPEG"``,
    ``"tif"`` -> ``"TIFF"``, ``"MPO"`` -> ``"JPEG"``; see :data:`FORMAT_ALIASES`). Other names
    come back upper-cased, whether or not this module can write them (check :data:`ENCODE_FORMATS`)."""
    if not isinstance(name, str):
        raise TypeError(f"format must be a string, got {type(name).__name__}")
    upper = name.strip().upper()
    return FORMAT_ALIASES.get(upper, upper)


def output_format_for(source_format: str) -> str:
    """The format an image read as ``source_format`` is written in when no format is asked for:
    the same (normalized) format when :func:`encode_image` can write it, else PNG (GIF, ICO, ...)."""
    target = normalize_format(source_format)
    return target if target in ENCODE_FORMATS else "PNG"


def _encode_target(image: object, format: str | None, quality: object, png_compression: object,
                   strip_metadata: object) -> str:
    """The format :func:`encode_image` writes, once its arguments are checked."""
    if not isinstance(image, DecodedImage):
        raise TypeError(f"image must be a DecodedImage, got {type(image).__name__}")
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
        raise ValueError(f"quality must be an integer in 1..100, got {quality!r}")
    if (
        isinstance(png_compression, bool)
        or not isinstance(png_compression, int)
        or png_compression not in PNG_COMPRESSION_LEVELS
    ):
        raise ValueError(f"png_compression must be an integer zlib level in 0..9, got {png_compression!r}")
    if not isinstance(strip_metadata, bool):
        raise TypeError(f"strip_metadata must be True or False, got {strip_metadata!r}")
    if format is None:
        return output_format_for(image.format)
    target = normalize_format(format)
    if target not in ENCODE_FORMATS:
        raise ValueError(f"cannot encode format {format!r}; supported: {', '.join(sorted(ENCODE_FORMATS))}")
    return target



def encode_image(
    image: DecodedImage,
    format: str | None = None,
    *,
    quality: int = 95,
    png_compression: int = 1,
    strip_metadata: bool = False,
) -> bytes:
    """Encode a :class:`DecodedImage` as PNG, JPEG, WEBP, TIFF or BMP bytes.

    Args:
        image: pixels plus metadata. Alpha is written for PNG, WEBP and TIFF and dropped for
            JPEG and BMP. 16-bit pixels stay 16-bit in PNG and TIFF and are rounded to 8 bits for
            the others. The ICC profile is embedded (not for BMP). Gray stays gray, except WEBP,
            which has no gray mode and stores RGB.
        format: one of :data:`ENCODE_FORMATS` (aliases such as ``"JPG"`` and ``"TIF"`` accepted,
            see :func:`normalize_format`), case-insensitive; None writes ``image.format``, or PNG
            when that is a format this function cannot write (:func:`output_format_for`).
        quality: JPEG/WEBP quality, 1..100; ignored by lossless formats.
        png_compression: PNG zlib level, 0..9 (8- and 16-bit). The default 1 is the fastest that
            compresses; Pillow's own default is 6. Ignored by other formats.
        strip_metadata: write no EXIF, XMP or IPTC (``image.metadata``). The ICC profile is
            still written: it says what the pixel values mean, not where the photo came from.

    Returns:
        The encoded file contents. ``image.metadata`` goes into JPEG, PNG, WEBP and TIFF (IPTC
        into JPEG and TIFF only; none into BMP) with the EXIF orientation set to 1 and the EXIF
        pixel dimensions set to the pixels' size; a JPEG block over one segment (65,533 bytes) is
        left out with a warning.

    Raises:
        TypeError / ValueError: a bad argument (the message names it and the allowed values), or
            an ``image.metadata.exif`` that is not an EXIF block.
    """
    target = _encode_target(image, format, quality, png_compression, strip_metadata)
    pixels, alpha, icc = image.pixels, image.alpha, image.icc_profile
    if icc is not None and not icc_matches(icc, image.channels if target != "WEBP" else 3):
        icc = None
    if target in ("JPEG", "BMP"):
        alpha = None
    metadata = NO_METADATA
    if not strip_metadata and target != "BMP" and not image.metadata.is_empty:
        metadata = metadata_for_output(image.metadata, image.width, image.height)
    if image.bit_depth == 16:
        if target == "PNG":
            return _encode_png16(pixels, alpha, icc, png_compression, metadata)
        if target == "TIFF":
            return with_tiff_metadata(_encode_tiff16(pixels, alpha, icc), metadata)
        pixels = to_uint8(pixels)
        alpha = None if alpha is None else to_uint8(alpha)

    planes = pixels if alpha is None else np.concatenate([pixels, alpha[:, :, None]], axis=2)
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[planes.shape[2]]
    pil_image = Image.fromarray(np.ascontiguousarray(planes[:, :, 0] if mode == "L" else planes))
    if target == "WEBP" and mode in ("L", "LA"):
        pil_image = pil_image.convert("RGBA" if mode == "LA" else "RGB")

    options: dict[str, object] = {}
    if icc is not None and target != "BMP":
        options["icc_profile"] = icc
    if target in ("JPEG", "WEBP"):
        options["quality"] = quality
    if target == "PNG":
        options["compress_level"] = png_compression
    if target == "TIFF" and features.check("libtiff"):
        options["compression"] = "tiff_adobe_deflate"
    options.update(pillow_metadata_options(target, metadata))  # TIFF's comes afterwards
    buffer = io.BytesIO()
    pil_image.save(buffer, format=target, **options)
    if target == "TIFF":
        return with_tiff_metadata(buffer.getvalue(), metadata)
    return buffer.getvalue()




def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _encode_png16(
    pixels: np.ndarray,
    alpha: np.ndarray | None,
    icc: bytes | None,
    compression: int,
    metadata: ImageMetadata,
) -> bytes:
    """A 16-bit PNG (gray, gray+alpha, RGB or RGBA), which Pillow cannot write beyond gray."""
    planes = pixels if alpha is None else np.concatenate([pixels, alpha[:, :, None]], axis=2)
    height, width, samples = planes.shape
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[samples]
    rows = planes.astype(">u2").view(np.uint8).reshape(height, width * samples * 2)
    # Filter type 1 ("Sub") on every row: each byte minus the same byte of the previous pixel,
    # modulo 256. Vectorized, and much better for deflate than no filter on photographs.
    bytes_per_pixel = samples * 2
    filtered = rows.copy()
    filtered[:, bytes_per_pixel:] -= rows[:, :-bytes_per_pixel]
    scanlines = np.concatenate([np.ones((height, 1), np.uint8), filtered], axis=1)
    header = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    chunks = [_png_chunk(b"IHDR", header)]
    if icc is not None:
        chunks.append(_png_chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(icc)))
    chunks.extend(_png_chunk(kind, payload) for kind, payload in png_metadata_chunks(metadata))
    chunks.append(_png_chunk(b"IDAT", zlib.compress(scanlines.tobytes(), compression)))
    chunks.append(_png_chunk(b"IEND", b""))
    return PNG_SIGNATURE + b"".join(chunks)


def _encode_tiff16(pixels: np.ndarray, alpha: np.ndarray | None, icc: bytes | None) -> bytes:
    import tifffile

    planes = pixels if alpha is None else np.concatenate([pixels, alpha[:, :, None]], axis=2)
    options: dict[str, object] = {
        "photometric": "rgb" if pixels.shape[2] == 3 else "minisblack",
        "planarconfig": "contig",
        "compression": "zlib",
        "metadata": None,  # no JSON shape description in ImageDescription
    }
    if alpha is not None:
        options["extrasamples"] = ["unassalpha"]
    if icc is not None:
        options["iccprofile"] = icc
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, planes if planes.shape[2] > 1 else planes[:, :, 0], **options)
    return buffer.getvalue()
