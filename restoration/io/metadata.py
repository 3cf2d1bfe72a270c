"""Descriptive metadata of image files: EXIF, XMP and IPTC, read from a decoded file and written
into an encoded one (:mod:`restoration.io.codec` calls these).

Where each block lives:

====== ========================== ================================ ==========================
format EXIF                       XMP                              IPTC
====== ========================== ================================ ==========================
JPEG   APP1 ``Exif``              APP1 (one segment)               APP13 Photoshop resource
PNG    ``eXIf`` chunk             ``iTXt`` ``XML:com.adobe.xmp``   --
WEBP   ``EXIF`` chunk             ``XMP `` chunk                   --
TIFF   the first directory        tag 700                          tag 33723
====== ========================== ================================ ==========================

Restored pixels are upright, so the EXIF orientation (and XMP ``tiff:Orientation``) is written
as 1, and tags that describe a file's pixel layout are dropped: copied into another file they
would contradict its real layout. TIFF directories are read with ``tifffile``; the EXIF block's
own structure with Pillow's ``Image.Exif``. A block that cannot be read is left out: unreadable
metadata never makes an image unreadable.
"""

from __future__ import annotations

import io
import re
import struct
import warnings
from dataclasses import dataclass
from typing import Final

from PIL import ExifTags, Image, TiffImagePlugin, TiffTags
from PIL.PngImagePlugin import PngInfo

__all__ = [
    "NO_METADATA",
    "ImageMetadata",
    "jpeg_metadata_options",
    "metadata_for_output",
    "pillow_metadata_options",
    "png_metadata_chunks",
    "read_metadata",
    "with_tiff_metadata",
]


@dataclass(frozen=True)
class ImageMetadata:
    """Descriptive metadata of an image file, carried from :func:`decode_image` to :func:`encode_image`.

    Each block is None when the source has none (an empty block is stored as None).

    Attributes:
        exif: an EXIF block as ``PIL.Image.Exif.tobytes()`` writes it (``b"Exif\\0\\0"`` and a
            TIFF-structured directory with its Exif and GPS sub-directories; read it with
            ``PIL.Image.Exif().load(exif)``). As decoded: orientation 1, no pixel-layout tags.
        xmp: an XMP packet, UTF-8 XML bytes (``tiff:Orientation`` set to 1 as decoded).
        iptc: IPTC-IIM records (bytes starting ``0x1C``), as stored in a JPEG's Photoshop APP13
            resource 0x0404 or a TIFF's tag 33723.
    """

    exif: bytes | None = None
    xmp: bytes | None = None
    iptc: bytes | None = None

    def __post_init__(self) -> None:
        for name in ("exif", "xmp", "iptc"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, (bytes, bytearray, memoryview)):
                raise TypeError(f"ImageMetadata.{name} must be bytes or None, got {type(value).__name__}")
            if value is not None:
                object.__setattr__(self, name, bytes(value) or None)

    @property
    def is_empty(self) -> bool:
        """Whether there is no block at all."""
        return self.exif is None and self.xmp is None and self.iptc is None


NO_METADATA: Final[ImageMetadata] = ImageMetadata()


# TIFF tags that describe how a file stores its pixels, not the photo. A TIFF's EXIF is its first
# directory, so they come with it (JPEG EXIF sometimes has a few too); written into another file
# they would contradict its real layout. ICC (34675), XMP (700) and IPTC (33723) have their own
# fields; Photoshop resources (34377) and layers (37724) are not carried.
_LAYOUT_TAGS: Final[frozenset[int]] = frozenset(
    {
        254, 255, 256, 257, 258, 259, 262, 263, 264, 265, 266, 273, 277, 278, 279, 280, 281, 284,
        288, 289, 290, 291, 292, 293, 297, 301, 317, 318, 319, 320, 321, 322, 323, 324, 325, 330,
        332, 338, 339, 340, 341, 347, 512, 513, 514, 515, 517, 518, 519, 520, 521, 529, 530, 532,
        700, 33723, 34377, 34675, 37724,
    }
)  # fmt: skip
_XMP_ORIENTATION: Final[re.Pattern[bytes]] = re.compile(rb"(tiff:Orientation\s*(?:=\s*[\"']|>)\s*)[0-9]+")
_TIFF_XMP_TAG: Final[int] = 700
_TIFF_IPTC_TAG: Final[int] = 33723
_PHOTOSHOP_IPTC_RESOURCE: Final[int] = 0x0404
_JPEG_SEGMENT_LIMIT: Final[int] = 65533  # payload bytes of one JPEG marker segment
_JPEG_XMP_LIMIT: Final[int] = _JPEG_SEGMENT_LIMIT - len(b"http://ns.adobe.com/xap/1.0/\x00")


def read_metadata(image: Image.Image | None, data: bytes, source_format: str) -> ImageMetadata:
    """EXIF, XMP and IPTC of an opened file (``image``; None: a TIFF Pillow cannot open).

    A block that cannot be read is left out: unreadable metadata must not make the image unreadable.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow warns on corrupt EXIF; it is left out instead
        return _read_blocks(image, data, source_format)


def _read_blocks(image: Image.Image | None, data: bytes, source_format: str) -> ImageMetadata:
    exif = xmp = iptc = None
    try:
        source_exif = Image.Exif()
        raw_exif = image.info.get("exif") if image is not None else None
        if isinstance(raw_exif, bytes) and raw_exif:
            source_exif.load(raw_exif)  # JPEG, PNG eXIf, WEBP: the stored block itself
        elif image is not None:
            # A copy, not the image's own Exif: Pillow's TIFF loader reads that one (and its
            # orientation) later.
            source_exif.load(image.getexif().tobytes())
        elif data.startswith((b"II*\x00", b"MM\x00*")):
            source_exif.load(data)  # a classic TIFF file is itself an EXIF-structured block
        exif = _upright_exif(source_exif)
    except Exception:
        exif = None
    try:
        if source_format == "TIFF":
            directory = _tiff_first_directory(data)
            values = directory.values if directory is not None else {}
            xmp, iptc = values.get(_TIFF_XMP_TAG), values.get(_TIFF_IPTC_TAG)
            if iptc is None and image is not None and hasattr(image, "get_photoshop_blocks"):
                iptc = image.get_photoshop_blocks().get(_PHOTOSHOP_IPTC_RESOURCE, {}).get("data")
        elif image is not None:
            xmp = image.info.get("xmp")
            photoshop = image.info.get("photoshop")  # JPEG APP13 resources, by id
            if isinstance(photoshop, dict):
                iptc = photoshop.get(_PHOTOSHOP_IPTC_RESOURCE)
        if isinstance(xmp, str):
            xmp = xmp.encode("utf-8")
        xmp = _upright_xmp(xmp) if isinstance(xmp, bytes) and xmp else None
        iptc = iptc if isinstance(iptc, bytes) and iptc else None
    except Exception:
        xmp = iptc = None
    return ImageMetadata(exif=exif, xmp=xmp, iptc=iptc)


def _upright_exif(exif: Image.Exif, size: tuple[int, int] | None = None) -> bytes | None:
    """An EXIF block for pixels that are already upright: orientation 1, no layout tags, and
    ``PixelXDimension``/``PixelYDimension`` set to ``size`` (width, height) when given. None when
    nothing but the orientation would be left. Changes ``exif`` in place."""
    for tag in [tag for tag in exif if tag in _LAYOUT_TAGS]:
        del exif[tag]
    if all(tag == ExifTags.Base.Orientation for tag in exif):
        return None
    if ExifTags.Base.Orientation in exif:
        exif[ExifTags.Base.Orientation] = 1
    if size is not None and ExifTags.IFD.Exif in exif:
        details = exif.get_ifd(ExifTags.IFD.Exif)  # Exif.tobytes writes this same dict back
        for tag, value in ((ExifTags.Base.ExifImageWidth, size[0]), (ExifTags.Base.ExifImageHeight, size[1])):
            if tag in details:
                details[tag] = value
    return exif.tobytes()


def _upright_xmp(xmp: bytes) -> bytes:
    """The XMP packet with ``tiff:Orientation`` (attribute or element) set to 1."""
    return _XMP_ORIENTATION.sub(rb"\g<1>1", xmp)


def metadata_for_output(metadata: ImageMetadata, width: int, height: int) -> ImageMetadata:
    """The blocks to write for upright ``width x height`` pixels (see :func:`_upright_exif`)."""
    exif = None
    if metadata.exif is not None:
        source = Image.Exif()
        try:
            source.load(metadata.exif)
            exif = _upright_exif(source, (width, height))
        except Exception as error:
            raise ValueError(
                f"metadata.exif is not a readable EXIF block ({len(metadata.exif)} bytes): "
                f"{type(error).__name__}: {error}"
            ) from error
    xmp = None if metadata.xmp is None else _upright_xmp(metadata.xmp)
    return ImageMetadata(exif=exif, xmp=xmp, iptc=metadata.iptc)


def jpeg_metadata_options(metadata: ImageMetadata) -> dict[str, object]:
    """Pillow save options for a JPEG's EXIF (APP1), XMP (APP1) and IPTC (APP13, via ``extra``).

    A JPEG marker segment holds at most 65,533 bytes; a larger block is left out with a warning
    (Extended XMP and multi-segment EXIF are not written).
    """
    options: dict[str, object] = {}
    for name, block, limit in (
        ("exif", metadata.exif, _JPEG_SEGMENT_LIMIT),
        ("xmp", metadata.xmp, _JPEG_XMP_LIMIT),
        ("iptc", metadata.iptc, _JPEG_SEGMENT_LIMIT - 30),  # Photoshop and 8BIM headers
    ):
        if block is None:
            continue
        if len(block) > limit:
            warnings.warn(
                f"{name} block of {len(block)} bytes does not fit one JPEG segment ({limit} bytes); "
                "it is not written",
                stacklevel=3,
            )
        elif name == "iptc":
            options["extra"] = _photoshop_iptc_segment(block)
        else:
            options[name] = block
    return options


def _photoshop_iptc_segment(iptc: bytes) -> bytes:
    """A JPEG APP13 segment: "Photoshop 3.0" image resources holding one IPTC-NAA resource."""
    padding = b"\x00" * (len(iptc) % 2)  # resource data is padded to an even length
    # 8BIM, resource id, empty Pascal-string name padded to 2 bytes, data size, data.
    resource = b"8BIM" + struct.pack(">H", _PHOTOSHOP_IPTC_RESOURCE) + b"\x00\x00"
    resource += struct.pack(">I", len(iptc)) + iptc + padding
    payload = b"Photoshop 3.0\x00" + resource
    return b"\xff\xed" + struct.pack(">H", len(payload) + 2) + payload


def pillow_metadata_options(target: str, metadata: ImageMetadata) -> dict[str, object]:
    """Pillow save options for the blocks of a JPEG, PNG or WEBP (none for other formats: TIFF
    gets its blocks afterwards, :func:`with_tiff_metadata`). IPTC has no place in PNG or WEBP."""
    if target == "JPEG":
        return jpeg_metadata_options(metadata)
    options: dict[str, object] = {}
    if target in ("WEBP", "PNG") and metadata.exif is not None:
        options["exif"] = metadata.exif
    if target == "WEBP" and metadata.xmp is not None:
        options["xmp"] = metadata.xmp
    if target == "PNG" and metadata.xmp is not None:
        text_chunks = PngInfo()
        text_chunks.add_itxt("XML:com.adobe.xmp", metadata.xmp)
        options["pnginfo"] = text_chunks
    return options


def png_metadata_chunks(metadata: ImageMetadata) -> list[tuple[bytes, bytes]]:
    """PNG chunks (type, payload) for EXIF (``eXIf``) and XMP (``iTXt`` keyword
    ``XML:com.adobe.xmp``, uncompressed, as the XMP specification asks)."""
    chunks = []
    if metadata.exif is not None:
        chunks.append((b"eXIf", metadata.exif.removeprefix(b"Exif\x00\x00")))
    if metadata.xmp is not None:
        # keyword, NUL, compression flag 0, method 0, empty language tag and translated keyword.
        chunks.append((b"iTXt", b"XML:com.adobe.xmp\x00\x00\x00\x00\x00" + metadata.xmp))
    return chunks


@dataclass(frozen=True)
class _TiffDirectory:
    """The first directory of a classic TIFF, as tifffile reads it: its byte order, its raw
    12-byte entries by tag, each tag's stored value bytes, and the next directory's offset."""

    byteorder: str
    entries: dict[int, bytes]
    values: dict[int, bytes]
    next_offset: int


def _tiff_first_directory(data: bytes) -> _TiffDirectory | None:
    """The first directory of a classic TIFF; None for anything else (BigTIFF, not a TIFF).
    Values are the stored bytes whatever the declared type (Photoshop declares its IPTC block an
    array of LONGs; the bytes are the block)."""
    import tifffile

    if not data.startswith((b"II*\x00", b"MM\x00*")):
        return None
    with tifffile.TiffFile(io.BytesIO(data)) as tiff:
        page = tiff.pages[0]
        byteorder = tiff.byteorder
        tags = list(page.tags.values())
        (count,) = struct.unpack_from(byteorder + "H", data, page.offset)
        (next_offset,) = struct.unpack_from(byteorder + "I", data, page.offset + 2 + 12 * count)
    return _TiffDirectory(
        byteorder=byteorder,
        entries={tag.code: data[tag.offset : tag.offset + 12] for tag in tags},
        values={tag.code: data[tag.valueoffset : tag.valueoffset + tag.valuebytecount] for tag in tags},
        next_offset=next_offset,
    )


def with_tiff_metadata(data: bytes, metadata: ImageMetadata) -> bytes:
    """A classic TIFF (as Pillow or tifffile wrote it) with EXIF, XMP and IPTC tags in its first
    directory.

    Neither writer can do it alone: libtiff, behind Pillow's compressed TIFF, rejects the Exif
    and GPS sub-directories, and tifffile writes no sub-directories. So a new first directory is
    appended: the writer's own entries verbatim (their values are absolute offsets, still valid
    since nothing moves) merged with the metadata entries, which Pillow's directory writer lays
    out at the end of the file; the header then points at it. The old directory stays,
    unreferenced (a few hundred bytes).
    """
    if metadata.is_empty:
        return data
    first = _tiff_first_directory(data)
    if first is None:
        return data
    byteorder, entries, next_offset = first.byteorder, first.entries, first.next_offset

    directory = TiffImagePlugin.ImageFileDirectory_v2(ifh=data[:8])
    if metadata.exif is not None:
        exif = Image.Exif()
        exif.load(metadata.exif)
        for tag, value in exif.items():
            if tag not in (ExifTags.IFD.Exif, ExifTags.IFD.GPSInfo) and tag not in _LAYOUT_TAGS:
                directory[tag] = value
        details = dict(exif.get_ifd(ExifTags.IFD.Exif))
        if ExifTags.IFD.Interop in details:
            interop = exif.get_ifd(ExifTags.IFD.Interop)
            details[ExifTags.IFD.Interop] = dict(interop)
            if not interop:
                del details[ExifTags.IFD.Interop]
        gps = dict(exif.get_ifd(ExifTags.IFD.GPSInfo))
        for pointer, sub_directory in ((ExifTags.IFD.Exif, details), (ExifTags.IFD.GPSInfo, gps)):
            if sub_directory:
                directory[pointer] = sub_directory  # a dict value is written as a sub-directory
    for tag, kind, block in (
        (_TIFF_XMP_TAG, TiffTags.BYTE, metadata.xmp),
        (_TIFF_IPTC_TAG, TiffTags.UNDEFINED, metadata.iptc),
    ):
        if block is not None:
            directory.tagtype[tag] = kind
            directory[tag] = block
    if not len(directory):
        return data

    block_start = len(data) + len(data) % 2  # directories and values start on a word boundary
    block = directory.tobytes(block_start)
    (count,) = struct.unpack_from(byteorder + "H", block, 0)  # Pillow's directory, then its values
    added = {struct.unpack_from(byteorder + "H", block, 2 + 12 * index)[0]: block[2 + 12 * index : 14 + 12 * index]
             for index in range(count)}
    merged = {**entries, **added}
    table_start = block_start + len(block) + len(block) % 2
    if table_start + 6 + 12 * len(merged) >= 2**32:
        return data  # past what classic TIFF offsets address; a writer would have made BigTIFF
    table = struct.pack(byteorder + "H", len(merged))
    table += b"".join(merged[tag] for tag in sorted(merged))  # TIFF wants ascending tags
    table += struct.pack(byteorder + "I", next_offset)
    return b"".join(
        [
            data[:4],
            struct.pack(byteorder + "I", table_start),
            data[8:],
            b"\x00" * (block_start - len(data)),
            block,
            b"\x00" * (table_start - block_start - len(block)),
            table,
        ]
    )
