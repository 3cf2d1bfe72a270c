"""Image bytes <-> pixel arrays, at the library boundary.

This is the only module where images are integer arrays: ``uint8`` or ``uint16``, laid out
``H x W x C`` with ``C`` in {1, 3} (gray or RGB). Everything past the codec works on float32
``C x H x W`` tensors in [0, 1] (:func:`pixels_to_tensor` / :func:`tensor_to_pixels`).

Decoding applies the EXIF orientation, splits alpha off into its own plane, and normalizes the
many Pillow modes into gray or RGB:

============================  =========================================================
source                        decoded as
============================  =========================================================
``1``, ``L``                  gray uint8 (``1`` becomes 0/255)
``LA``, ``La``                gray uint8 + alpha
``RGB``, ``RGBX``, ``YCbCr``  RGB uint8
``RGBA``, ``RGBa``, ``PA``    RGB uint8 + alpha
``P``                         RGB uint8, + alpha when the palette has transparency
``CMYK``                      RGB uint8 (through the embedded ICC profile when there is one)
``I;16``, ``I;16B``, ...      gray uint16
``I``                         gray uint16 when every value fits in 0..65535, else an error
16-bit RGB(A) / LA PNG        RGB or gray uint16 (+ alpha), lossless (Pillow alone would
                              keep only the high byte)
16-bit multi-sample TIFF      RGB or gray uint16 (+ alpha), lossless, read with tifffile
                              (gray + alpha has no Pillow mode; reported as ``"LA"``)
``F`` (32-bit float)          rejected: a float image has no defined white level
============================  =========================================================

A single color marked transparent with a ``tRNS`` chunk (gray or RGB PNG) becomes an alpha plane.
Multi-frame files (GIF, TIFF, APNG) decode their first frame.

Descriptive metadata travels in :class:`ImageMetadata` from :func:`decode_image` to
:func:`encode_image` (``strip_metadata=True`` drops it); :mod:`restoration.io.metadata` reads and
writes the blocks:

=========  ==========================  ===================================================
block      read from                   written to
=========  ==========================  ===================================================
EXIF       JPEG, PNG, WEBP, TIFF, ...  JPEG, PNG (8/16-bit), WEBP, TIFF (8/16-bit)
XMP        JPEG, PNG, WEBP, TIFF, GIF  JPEG, PNG (8/16-bit), WEBP, TIFF (8/16-bit)
IPTC-IIM   JPEG (APP13), TIFF          JPEG (APP13), TIFF (tag 33723); PNG and WEBP have no
                                       standard place for it and write none
ICC        every format                every format but BMP (``DecodedImage.icc_profile``)
=========  ==========================  ===================================================

The EXIF orientation is applied to the pixels, so the orientation tag is set to 1 (in EXIF and in
XMP's ``tiff:Orientation``), and an EXIF block that held nothing but the orientation is dropped.
EXIF tags that describe how a file stores its pixels (sizes, strips, compression, bits per
sample, ...) are not carried, and ``PixelXDimension``/``PixelYDimension`` are set to the written
size.

Pillow keeps its own process-wide decompression-bomb guard (``PIL.Image.MAX_IMAGE_PIXELS``; it
refuses images above twice that value, about 179 megapixels by default). :func:`decode_image`
checks its own ``max_pixels`` first; to decode images larger than Pillow's guard, raise both.

tifffile (a dependency of scikit-image) handles 16-bit multi-channel TIFF, which Pillow can only
read with the low byte dropped and cannot write at all.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from typing import Final

import numpy as np
from PIL import ExifTags, Image, ImageCms, UnidentifiedImageError

from restoration.io.metadata import (
    NO_METADATA,
    ImageMetadata,
    read_metadata,
)
from restoration.io.pixels import PIXEL_DTYPES, check_pixels, resize_plane

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DecodedImage",
    "ImageDecodeError",
    "ImageMetadata",
    "check_image_size",
    "decode_image",
    "read_image_file",
    "with_pixels",
]

DEFAULT_MAX_PIXELS: Final[int] = 100_000_000
"""Images with more pixels (width * height) than this are refused before their data is decoded."""

PNG_SIGNATURE: Final[bytes] = b"\x89PNG\r\n\x1a\n"
_TIFF_SIGNATURES: Final[tuple[bytes, ...]] = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")

# Pillow modes that convert losslessly (or by a defined rule) to our 8-bit layouts.
_EIGHT_BIT_TARGET: Final[dict[str, str]] = {
    "1": "L",
    "L": "L",
    "LA": "LA",
    "La": "LA",
    "RGB": "RGB",
    "RGBX": "RGB",
    "YCbCr": "RGB",
    "RGBA": "RGBA",
    "RGBa": "RGBA",
    "PA": "RGBA",
}
_SIXTEEN_BIT_GRAY_MODES: Final[frozenset[str]] = frozenset({"I;16", "I;16B", "I;16L", "I;16N"})
_SUPPORTED_MODES: Final[tuple[str, ...]] = (
    *_EIGHT_BIT_TARGET,
    "P",
    "CMYK",
    *sorted(_SIXTEEN_BIT_GRAY_MODES),
    "I",
)


class ImageDecodeError(ValueError):
    """The bytes are not an image this library can decode; the message says why."""




@dataclass(frozen=True)
class DecodedImage:
    """Decoded pixels plus what is needed to write them back the way they came.

    Attributes:
        pixels: ``H x W x C`` array, ``C`` in {1, 3}, dtype uint8 or uint16, EXIF orientation
            already applied.
        alpha: ``H x W`` array of the same dtype as ``pixels`` (0 = transparent), or None.
        mode: the source's Pillow mode (``"L"``, ``"RGBA"``, ``"P"``, ``"CMYK"``, ``"I;16"``, ...).
        format: the source's format as Pillow names it (``"PNG"``, ``"JPEG"``, ``"TIFF"``, ...).
        icc_profile: the embedded ICC profile, describing ``pixels``, or None.
        metadata: the source's EXIF, XMP and IPTC blocks (:class:`ImageMetadata`; empty when none).
    """

    pixels: np.ndarray
    alpha: np.ndarray | None
    mode: str
    format: str
    icc_profile: bytes | None = None
    metadata: ImageMetadata = NO_METADATA

    def __post_init__(self) -> None:
        check_pixels(self.pixels)
        if not isinstance(self.metadata, ImageMetadata):
            raise TypeError(f"metadata must be an ImageMetadata, got {type(self.metadata).__name__}")
        if self.alpha is not None:
            if not isinstance(self.alpha, np.ndarray) or self.alpha.shape != self.pixels.shape[:2]:
                shape = getattr(self.alpha, "shape", type(self.alpha).__name__)
                raise ValueError(
                    f"alpha must be an H x W array matching pixels {self.pixels.shape[:2]}, got {shape}"
                )
            if self.alpha.dtype != self.pixels.dtype:
                raise ValueError(
                    f"alpha dtype {self.alpha.dtype} differs from pixels dtype {self.pixels.dtype}"
                )

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def channels(self) -> int:
        """1 (gray) or 3 (RGB); alpha is not counted."""
        return int(self.pixels.shape[2])

    @property
    def bit_depth(self) -> int:
        """8 or 16 bits per sample."""
        return 16 if self.pixels.dtype == np.uint16 else 8

    @property
    def is_gray(self) -> bool:
        return self.channels == 1




# --------------------------------------------------------------------------------------------
# Decoding


def decode_image(
    data: bytes | bytearray | memoryview, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> DecodedImage:
    """Decode encoded image bytes (PNG, JPEG, WebP, TIFF, BMP, GIF, ...) into a :class:`DecodedImage`.

    Args:
        data: the encoded file contents.
        max_pixels: refuse images with more than this many pixels (width * height), checked from
            the header before any pixel data is decoded.

    Returns:
        Pixels ``H x W x C`` (C in {1, 3}) uint8 or uint16 with EXIF orientation applied, alpha
        split off, and the source mode, format and ICC profile.

    Raises:
        ImageDecodeError: empty, truncated, corrupt or unrecognized data, an unsupported mode, or
            an image over ``max_pixels``. No Pillow exception escapes.
        TypeError / ValueError: ``data`` is not bytes-like, ``max_pixels`` is not a positive int.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels <= 0:
        raise ValueError(f"max_pixels must be a positive integer, got {max_pixels!r}")
    data = bytes(data)
    if not data:
        raise ImageDecodeError("cannot decode an empty input (0 bytes)")
    try:
        return _decode(data, max_pixels)
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError as error:
        raise ImageDecodeError(
            f"image is larger than Pillow's decompression-bomb limit "
            f"(PIL.Image.MAX_IMAGE_PIXELS={Image.MAX_IMAGE_PIXELS}): {error}"
        ) from error
    except UnidentifiedImageError as error:
        signature_format = _format_from_signature(data)
        if signature_format is not None:
            raise ImageDecodeError(
                f"corrupt {signature_format} data ({len(data)} bytes): Pillow cannot parse its header"
            ) from error
        raise ImageDecodeError(
            f"not a recognized image format ({len(data)} bytes starting with {data[:8]!r})"
        ) from error
    except MemoryError as error:
        raise ImageDecodeError(f"not enough memory to decode the image ({len(data)} bytes)") from error
    except Exception as error:  # Pillow plugins raise OSError, SyntaxError, struct.error, ...
        raise ImageDecodeError(
            f"image data is truncated or corrupt ({len(data)} bytes): {type(error).__name__}: {error}"
        ) from error


def _format_from_signature(data: bytes) -> str | None:
    """The format whose magic number ``data`` starts with, for error messages."""
    if data.startswith(PNG_SIGNATURE):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if data.startswith(_TIFF_SIGNATURES):
        return "TIFF"
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "WEBP"
    if data.startswith(b"BM"):
        return "BMP"
    return None


def _decode(data: bytes, max_pixels: int) -> DecodedImage:
    with warnings.catch_warnings():
        # Our own max_pixels check below replaces Pillow's warning.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        # Opening a JPEG reads its EXIF for the DPI; corrupt EXIF counts as none (see _read_metadata).
        warnings.filterwarnings("ignore", message="Corrupt EXIF data", category=UserWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            if data.startswith(_TIFF_SIGNATURES):
                # e.g. 16-bit gray + alpha, which Pillow has no mode for.
                return _decode_tiff_with_tifffile(data, max_pixels, read_metadata(None, data, "TIFF"))
            raise
    width, height = image.size
    _check_decode_size(width, height, max_pixels)
    source_format = image.format or "UNKNOWN"
    # Before the pixels are loaded: a TIFF's EXIF sub-directories are read from the open file.
    metadata = read_metadata(image, data, source_format)
    if source_format == "TIFF" and _tiff_is_wide(image):
        return _decode_tiff_with_tifffile(data, max_pixels, metadata)
    source_mode = image.mode
    _check_mode(source_mode)  # before decoding any pixel data
    icc_profile = image.info.get("icc_profile") or None

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        if source_format == "PNG" and _png_is_wide(data):
            orientation = _exif_orientation(image)
            pixels, alpha = _decode_wide_png(data)
        else:
            image.load()
            # Read after loading: Pillow's TIFF loader applies the orientation itself and removes
            # the tag, so what is left here is what remains to be applied.
            orientation = _exif_orientation(image)
            pixels, alpha, icc_profile = _pillow_to_arrays(image, icc_profile)
    return _finish(pixels, alpha, orientation, source_mode, source_format, icc_profile, metadata)


def check_image_size(*, height: int, width: int, max_pixels: int | None = None, name: str = "image") -> None:
    """Check an image (or mask) size before any work is done on it.

    The arguments are keyword-only, so that height and width cannot be swapped silently.

    Args:
        height, width: the size in pixels; both must be positive integers.
        max_pixels: when given, the largest allowed ``width * height``.
        name: what the size belongs to, for the message (``"image"``, ``"mask"``, ...).

    Raises:
        ValueError: a size that is not a positive integer, or more pixels than ``max_pixels``;
            the message names both dimensions as ``WIDTHxHEIGHT``, as image tools print them.
    """
    for dimension, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(
                f"{name} {dimension} must be a positive integer, got {value!r} ({name} {width}x{height})"
            )
    if max_pixels is not None and width * height > max_pixels:
        raise ValueError(
            f"{name} has {width * height} pixels ({width}x{height}), more than the limit {max_pixels}; "
            "pass a larger max_pixels to accept it"
        )


def _check_decode_size(width: int, height: int, max_pixels: int) -> None:
    try:
        check_image_size(height=height, width=width, max_pixels=max_pixels)
    except ValueError as error:
        raise ImageDecodeError(str(error)) from None


def _finish(
    pixels: np.ndarray,
    alpha: np.ndarray | None,
    orientation: int,
    mode: str,
    source_format: str,
    icc_profile: bytes | None,
    metadata: ImageMetadata,
) -> DecodedImage:
    pixels = _orient(pixels, orientation)
    alpha = None if alpha is None else _orient(alpha, orientation)
    if icc_profile is not None and not icc_matches(icc_profile, pixels.shape[2]):
        icc_profile = None  # e.g. a CMYK profile after CMYK -> RGB: it no longer describes the data
    return DecodedImage(
        pixels=np.ascontiguousarray(pixels),
        alpha=None if alpha is None else np.ascontiguousarray(alpha),
        mode=mode,
        format=source_format,
        icc_profile=icc_profile,
        metadata=metadata,
    )


def _pillow_to_arrays(
    image: Image.Image, icc_profile: bytes | None
) -> tuple[np.ndarray, np.ndarray | None, bytes | None]:
    """Pixels (H x W x C) and alpha (H x W or None) from a loaded Pillow image of any supported mode."""
    mode = image.mode
    transparent = image.info.get("transparency")
    if mode in _SIXTEEN_BIT_GRAY_MODES or mode == "I":
        gray = np.asarray(image)
        if mode == "I" and gray.size and (gray.min() < 0 or gray.max() > 65535):
            raise ImageDecodeError(
                f"32-bit integer image (mode I) has values {gray.min()}..{gray.max()}, "
                "outside the 16-bit range 0..65535 this library handles"
            )
        gray = gray.astype(np.uint16)
        return gray[:, :, None], _color_key_alpha(gray[:, :, None], transparent), icc_profile
    if mode == "CMYK":
        return np.asarray(_cmyk_to_rgb(image, icc_profile)), None, None
    if mode == "P":
        target = "RGBA" if image.has_transparency_data else "RGB"
    else:
        target = _EIGHT_BIT_TARGET[mode]
    color_key = transparent if mode in ("L", "RGB") and target in ("L", "RGB") else None
    converted = image if image.mode == target else image.convert(target)
    array = np.asarray(converted)
    if array.ndim == 2:
        array = array[:, :, None]
    if target in ("LA", "RGBA"):
        return array[:, :, :-1], array[:, :, -1], icc_profile
    return array, _color_key_alpha(array, color_key), icc_profile


def _check_mode(mode: str) -> None:
    if mode == "F":
        raise ImageDecodeError(
            "32-bit float images (mode F) are not supported: their white level is undefined; "
            "convert them to 8- or 16-bit integers first"
        )
    if mode not in _SUPPORTED_MODES:
        raise ImageDecodeError(
            f"unsupported image mode {mode!r}; supported modes: {', '.join(_SUPPORTED_MODES)}"
        )


def _color_key_alpha(pixels: np.ndarray, transparent: object) -> np.ndarray | None:
    """Alpha from a tRNS color key: fully transparent where pixels equal the key, opaque elsewhere."""
    if transparent is None or isinstance(transparent, bytes):
        return None
    key = np.atleast_1d(np.asarray(transparent))
    if key.shape[0] != pixels.shape[2]:
        return None
    opaque = np.iinfo(pixels.dtype).max
    alpha = np.full(pixels.shape[:2], opaque, dtype=pixels.dtype)
    alpha[np.all(pixels == key.astype(pixels.dtype), axis=2)] = 0
    return alpha


def _cmyk_to_rgb(image: Image.Image, icc_profile: bytes | None) -> Image.Image:
    if icc_profile is not None:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
            converted = ImageCms.profileToProfile(
                image, source, ImageCms.createProfile("sRGB"), outputMode="RGB"
            )
            if converted is not None:
                return converted
        except (ImageCms.PyCMSError, OSError, ValueError):
            pass  # an unusable profile: fall back to Pillow's naive conversion
    return image.convert("RGB")


def icc_matches(icc_profile: bytes, channels: int) -> bool:
    """Whether an ICC profile's data color space (header bytes 16..20) fits 1- or 3-channel pixels."""
    space = icc_profile[16:20]
    if space == b"GRAY":
        return channels == 1
    if space == b"RGB ":
        return channels == 3
    return False


def _exif_orientation(image: Image.Image) -> int:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns on corrupt EXIF, which counts as none
            orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:  # unreadable EXIF must not make the image unreadable
        return 1
    return orientation if isinstance(orientation, int) and 1 <= orientation <= 8 else 1


def _orient(array: np.ndarray, orientation: int) -> np.ndarray:
    """Apply EXIF orientation 1..8 to an H x W (x C) array, as ``ImageOps.exif_transpose`` does."""
    if orientation == 2:
        return array[:, ::-1]
    if orientation == 3:
        return array[::-1, ::-1]
    if orientation == 4:
        return array[::-1]
    if orientation == 5:
        return array.swapaxes(0, 1)
    if orientation == 6:
        return np.rot90(array, k=-1)
    if orientation == 7:
        return array[::-1, ::-1].swapaxes(0, 1)
    if orientation == 8:
        return np.rot90(array, k=1)
    return array


# 16-bit multi-channel PNG. Pillow decodes these as 8-bit RGB(A) by keeping only the high byte
# of every sample. Its C decoder still does the hard part (inflate, unfilter, de-interlace), so
# we run it with unpackers that keep the bytes Pillow would otherwise drop and reassemble them.


def _png_is_wide(data: bytes) -> bool:
    """Whether a PNG is 16-bit gray+alpha, RGB or RGBA (color types 4, 2, 6)."""
    if len(data) < 29 or not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return False
    bit_depth, color_type = data[24], data[25]
    return bit_depth == 16 and color_type in (2, 4, 6)


def _decode_with_rawmode(data: bytes, rawmode: str) -> np.ndarray:
    image = Image.open(io.BytesIO(data))
    if len(image.tile) != 1 or image.tile[0].codec_name != "zip":
        raise ImageDecodeError(f"unsupported 16-bit PNG layout (tiles {image.tile!r})")
    image.tile = [image.tile[0]._replace(args=rawmode)]
    image.load()
    return np.asarray(image).astype(np.uint16)


def _decode_wide_png(data: bytes) -> tuple[np.ndarray, np.ndarray | None]:
    color_type = data[25]
    if color_type == 4:
        # 4 bytes per pixel (gray hi, gray lo, alpha hi, alpha lo) fit one 8-bit RGBA pixel whole.
        planes = _decode_with_rawmode(data, "RGBA")
        gray = (planes[:, :, 0] << 8) | planes[:, :, 1]
        alpha = (planes[:, :, 2] << 8) | planes[:, :, 3]
        return gray[:, :, None], alpha
    rawmode = "RGB" if color_type == 2 else "RGBA"
    # ";16B" unpacks the first byte of each big-endian sample (the high byte), ";16L" the second.
    high = _decode_with_rawmode(data, f"{rawmode};16B")
    low = _decode_with_rawmode(data, f"{rawmode};16L")
    samples = (high << 8) | low
    if color_type == 2:
        pixels = samples[:, :, :3]
        trns = Image.open(io.BytesIO(data)).info.get("transparency")
        return pixels, _color_key_alpha(pixels, trns)
    return samples[:, :, :3], samples[:, :, 3]


def _tiff_is_wide(image: Image.Image) -> bool:
    """Whether a TIFF has more than one sample per pixel at more than 8 bits (lossy in Pillow)."""
    tags = getattr(image, "tag_v2", None)
    if tags is None:
        return False
    bits = tags.get(258, (1,))
    bits = bits if isinstance(bits, tuple) else (bits,)
    samples = tags.get(277, 1)
    return samples > 1 and max(bits) > 8


def _decode_tiff_with_tifffile(data: bytes, max_pixels: int, metadata: ImageMetadata) -> DecodedImage:
    """First page of a TIFF that Pillow cannot read losslessly (16-bit multi-channel)."""
    import tifffile

    with tifffile.TiffFile(io.BytesIO(data)) as tiff:
        page = tiff.pages[0]
        axes, shape = page.axes, page.shape
        if axes not in ("YX", "YXS", "SYX"):
            raise ImageDecodeError(f"unsupported TIFF layout {axes!r}; supported: YX, YXS, SYX (first page)")
        _check_decode_size(shape[axes.index("X")], shape[axes.index("Y")], max_pixels)
        photometric = int(page.photometric)
        orientation_tag = page.tags.get(274)
        icc_tag = page.tags.get(34675)
        array = page.asarray()
    if array.dtype not in PIXEL_DTYPES:
        raise ImageDecodeError(f"unsupported TIFF sample type {array.dtype}; supported: uint8, uint16")
    if axes == "SYX":
        array = np.moveaxis(array, 0, -1)
    elif axes == "YX":
        array = array[:, :, None]
    # TIFF photometric interpretation: 1 = gray (min is black), 2 = RGB.
    color_channels = {1: 1, 2: 3}.get(photometric)
    if color_channels is None or array.shape[2] < color_channels:
        raise ImageDecodeError(
            f"unsupported TIFF photometric interpretation {photometric} with {array.shape[2]} samples; "
            "supported: gray or RGB, optionally with one alpha sample"
        )
    pixels = array[:, :, :color_channels]
    alpha = array[:, :, color_channels] if array.shape[2] > color_channels else None
    orientation = orientation_tag.value if orientation_tag is not None else 1
    orientation = orientation if isinstance(orientation, int) and 1 <= orientation <= 8 else 1
    icc_profile = bytes(icc_tag.value) if icc_tag is not None else None
    mode = ("L" if color_channels == 1 else "RGB") + ("A" if alpha is not None else "")
    if pixels.dtype == np.uint16 and mode == "L":
        mode = "I;16"
    return _finish(pixels, alpha, orientation, mode, "TIFF", icc_profile, metadata)


def read_image_file(path: str | os.PathLike[str], *, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Read and decode a local image file; errors name the path. See :func:`decode_image`."""
    with open(path, "rb") as file:
        data = file.read()
    try:
        return decode_image(data, max_pixels=max_pixels)
    except ImageDecodeError as error:
        raise ImageDecodeError(f"{os.fspath(path)}: {error}") from error


def with_pixels(image: DecodedImage, pixels: np.ndarray) -> DecodedImage:
    """The same mode, format, ICC profile and metadata with new pixels (``H x W x C``, C in {1, 3},
    uint8 or uint16).

    The pixels may have a new size (super-resolution) or dtype: alpha is resized bicubically and
    rescaled to match, so it can still be written back.
    """
    check_pixels(pixels)
    alpha = image.alpha
    if alpha is not None:
        alpha = resize_plane(alpha, pixels.shape[1], pixels.shape[0], pixels.dtype)
    return DecodedImage(
        pixels=pixels,
        alpha=alpha,
        mode=image.mode,
        format=image.format,
        icc_profile=image.icc_profile,
        metadata=image.metadata,
    )
