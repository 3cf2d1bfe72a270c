"""restoration.io.codec metadata: EXIF (dates, camera, GPS), XMP and IPTC carried from decode to
encode for JPEG, PNG, TIFF and WEBP, the orientation reset to 1 once applied, strip_metadata.

Source files are written by Pillow directly (and, for IPTC in JPEG, by a segment built here), and
outputs are read back by Pillow, so the codec is checked against an independent reader and writer.
"""

from __future__ import annotations

import io
import struct
import warnings

import numpy as np
import pytest
from PIL import ExifTags, Image, ImageOps, IptcImagePlugin
from PIL.PngImagePlugin import PngInfo

from restoration.io.codec import DecodedImage, ImageMetadata, decode_image, with_pixels
from restoration.io.encode import encode_image

DATE = "2001:02:03 04:05:06"
CAPTION = b"Harbour at dawn"
XMP_TEMPLATE = (
    '<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?>'
    '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    '<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/" '
    'xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="{orientation}">'
    "<dc:description><rdf:Alt><rdf:li xml:lang=\"x-default\">Harbour at dawn</rdf:li></rdf:Alt></dc:description>"
    '</rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end="w"?>'
)
XMP = XMP_TEMPLATE.format(orientation=6).encode()
# IPTC-IIM: record 2 version (2:00), caption (2:120), city (2:90).
IPTC = (
    b"\x1c\x02\x00\x00\x02\x00\x04"
    + b"\x1c\x02\x78"
    + struct.pack(">H", len(CAPTION))
    + CAPTION
    + b"\x1c\x02\x5a\x00\x06Lisbon"
)
STORED_HEIGHT, STORED_WIDTH = 24, 40
FORMATS_WITH_IPTC = ("JPEG", "TIFF")


def source_exif(orientation: int = 6) -> Image.Exif:
    """EXIF as a camera writes it: date, make/model, orientation, Exif and GPS sub-directories."""
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "Canon"
    exif[ExifTags.Base.Model] = "Canon EOS 5D"
    exif[ExifTags.Base.DateTime] = DATE
    exif[ExifTags.Base.Orientation] = orientation
    details = exif.get_ifd(ExifTags.IFD.Exif)
    details[ExifTags.Base.DateTimeOriginal] = DATE
    details[ExifTags.Base.ExifImageWidth] = STORED_WIDTH
    details[ExifTags.Base.ExifImageHeight] = STORED_HEIGHT
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = (38.0, 42.0, 30.0)
    gps[ExifTags.GPS.GPSLongitudeRef] = "W"
    gps[ExifTags.GPS.GPSLongitude] = (9.0, 8.0, 15.0)
    return exif


def stored_pixels() -> np.ndarray:
    """Left half red, right half blue, as stored (before orientation 6 turns it clockwise)."""
    pixels = np.zeros((STORED_HEIGHT, STORED_WIDTH, 3), np.uint8)
    pixels[:, : STORED_WIDTH // 2] = (255, 0, 0)
    pixels[:, STORED_WIDTH // 2 :] = (0, 0, 255)
    return pixels


def jpeg_app13(iptc: bytes) -> bytes:
    """A Photoshop APP13 segment with one IPTC resource, built here independently of the codec."""
    data = iptc + b"\x00" * (len(iptc) % 2)
    payload = b"Photoshop 3.0\x00" + b"8BIM\x04\x04\x00\x00" + struct.pack(">I", len(iptc)) + data
    return b"\xff\xed" + struct.pack(">H", len(payload) + 2) + payload


def source_file(format: str, *, orientation: int = 6, with_exif: bool = True) -> bytes:
    """A photo file with EXIF, XMP and (JPEG, TIFF) IPTC, written by Pillow."""
    image = Image.fromarray(stored_pixels())
    exif = source_exif(orientation)
    buffer = io.BytesIO()
    if format == "JPEG":
        image.save(buffer, "JPEG", quality=95, exif=exif.tobytes(), xmp=XMP, extra=jpeg_app13(IPTC))
    elif format == "WEBP":
        image.save(buffer, "WEBP", quality=95, exif=exif.tobytes(), xmp=XMP)
    elif format == "PNG":
        text = PngInfo()
        text.add_itxt("XML:com.adobe.xmp", XMP)
        image.save(buffer, "PNG", pnginfo=text, **({"exif": exif.tobytes()} if with_exif else {}))
    elif format == "TIFF":
        # Pillow's own (uncompressed) TIFF writer takes the EXIF sub-directories, XMP and IPTC.
        exif[700] = XMP
        exif[33723] = IPTC
        image.save(buffer, "TIFF", exif=exif.tobytes())
    else:
        raise AssertionError(format)
    return buffer.getvalue()


def reopened(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def assert_upright(pixels: np.ndarray) -> None:
    """The pixels of ``stored_pixels`` turned clockwise: red on top, blue below, portrait."""
    assert pixels.shape[:2] == (STORED_WIDTH, STORED_HEIGHT)
    top, bottom = pixels[5, STORED_HEIGHT // 2].astype(int), pixels[-5, STORED_HEIGHT // 2].astype(int)
    assert top[0] > 200 and top[2] < 60, top
    assert bottom[2] > 200 and bottom[0] < 60, bottom


def assert_metadata_kept(data: bytes, format: str) -> None:
    """EXIF date, camera, GPS and orientation 1, XMP caption and orientation 1, IPTC caption."""
    image = reopened(data)
    exif = image.getexif()
    assert exif[ExifTags.Base.Make] == "Canon" and exif[ExifTags.Base.Model] == "Canon EOS 5D"
    assert exif[ExifTags.Base.DateTime] == DATE
    assert exif[ExifTags.Base.Orientation] == 1
    details = exif.get_ifd(ExifTags.IFD.Exif)
    assert details[ExifTags.Base.DateTimeOriginal] == DATE
    # The pixel dimensions follow the written (upright) pixels.
    assert (details[ExifTags.Base.ExifImageWidth], details[ExifTags.Base.ExifImageHeight]) == (
        STORED_HEIGHT,
        STORED_WIDTH,
    )
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    assert gps[ExifTags.GPS.GPSLatitudeRef] == "N" and gps[ExifTags.GPS.GPSLongitudeRef] == "W"
    assert tuple(float(value) for value in gps[ExifTags.GPS.GPSLatitude]) == (38.0, 42.0, 30.0)
    assert tuple(float(value) for value in gps[ExifTags.GPS.GPSLongitude]) == (9.0, 8.0, 15.0)
    xmp = image.info["xmp"]
    assert CAPTION in xmp and b'tiff:Orientation="1"' in xmp
    if format in FORMATS_WITH_IPTC:
        iptc = IptcImagePlugin.getiptcinfo(image)
        assert iptc is not None and iptc[(2, 120)] == CAPTION and iptc[(2, 90)] == b"Lisbon"
    # Pillow's own orientation handling agrees that nothing is left to rotate.
    assert ImageOps.exif_transpose(image).size == image.size == (STORED_HEIGHT, STORED_WIDTH)


def assert_metadata_gone(data: bytes) -> None:
    image = reopened(data)
    exif = image.getexif()
    if image.format == "TIFF":  # a TIFF's first directory is its EXIF: only the layout tags stay
        assert not {271, 272, 274, 306, 700, 33723, 34665, 34853} & set(exif), dict(exif)
    else:
        assert not exif, dict(exif)
    assert "xmp" not in image.info and "XML:com.adobe.xmp" not in image.info
    assert IptcImagePlugin.getiptcinfo(image) is None


# --------------------------------------------------------------------------------------------
# Round trips, per format


@pytest.mark.parametrize("format", ["JPEG", "PNG", "TIFF", "WEBP"])
def test_metadata_round_trip(format: str) -> None:
    decoded = decode_image(source_file(format))

    assert_upright(decoded.pixels)
    metadata = decoded.metadata
    exif = Image.Exif()
    exif.load(metadata.exif)
    assert exif[ExifTags.Base.Orientation] == 1 and exif[ExifTags.Base.Make] == "Canon"
    assert metadata.xmp is not None and b'tiff:Orientation="1"' in metadata.xmp
    assert metadata.iptc == (IPTC if format in FORMATS_WITH_IPTC else None)

    output = encode_image(decoded)

    assert reopened(output).format == format
    assert_metadata_kept(output, format)
    again = decode_image(output)
    assert_upright(again.pixels)  # not turned a second time
    if format in ("PNG", "TIFF"):
        np.testing.assert_array_equal(again.pixels, decoded.pixels)
    assert again.metadata.iptc == metadata.iptc

    stripped = encode_image(decoded, strip_metadata=True)
    assert_metadata_gone(stripped)
    assert_upright(decode_image(stripped).pixels)


@pytest.mark.parametrize("target", ["JPEG", "PNG", "TIFF", "WEBP"])
def test_metadata_crosses_formats(target: str) -> None:
    """A camera JPEG written as each format keeps its metadata; IPTC only where the format has it."""
    decoded = decode_image(source_file("JPEG"))
    output = encode_image(decoded, target)
    assert_metadata_kept(output, target)
    assert decode_image(output).metadata.iptc == (IPTC if target in FORMATS_WITH_IPTC else None)
    assert_metadata_gone(encode_image(decoded, target, strip_metadata=True))


@pytest.mark.parametrize("format", ["PNG", "TIFF"])
@pytest.mark.parametrize("has_alpha", [False, True])
def test_sixteen_bit_writers_carry_metadata(format: str, has_alpha: bool) -> None:
    metadata = decode_image(source_file("JPEG")).metadata
    rng = np.random.default_rng(7)
    pixels = rng.integers(0, 65536, (STORED_WIDTH, STORED_HEIGHT, 3), dtype=np.uint16)
    alpha = rng.integers(0, 65536, pixels.shape[:2], dtype=np.uint16) if has_alpha else None
    image = DecodedImage(pixels, alpha, "RGB", format, None, metadata)

    output = encode_image(image)

    assert_metadata_kept(output, format)
    decoded = decode_image(output)
    assert decoded.bit_depth == 16
    np.testing.assert_array_equal(decoded.pixels, pixels)
    if has_alpha:
        np.testing.assert_array_equal(decoded.alpha, alpha)
    assert decoded.metadata.iptc == (IPTC if format == "TIFF" else None)
    assert decoded.metadata.xmp == metadata.xmp
    assert_metadata_gone(encode_image(image, strip_metadata=True))


def test_sixteen_bit_gray_alpha_tiff_keeps_metadata_without_pillow() -> None:
    """16-bit gray + alpha TIFF has no Pillow mode: its metadata is read from the file directly."""
    metadata = decode_image(source_file("JPEG")).metadata
    gray = np.arange(STORED_WIDTH * STORED_HEIGHT, dtype=np.uint16).reshape(STORED_WIDTH, STORED_HEIGHT, 1)
    alpha = np.full(gray.shape[:2], 40000, np.uint16)
    output = encode_image(DecodedImage(gray * 50, alpha, "LA", "TIFF", None, metadata))

    decoded = decode_image(output)

    assert (decoded.mode, decoded.bit_depth) == ("LA", 16)
    np.testing.assert_array_equal(decoded.pixels, gray * 50)
    assert decoded.metadata.xmp == metadata.xmp and decoded.metadata.iptc == IPTC
    exif = Image.Exif()
    exif.load(decoded.metadata.exif)
    assert exif[ExifTags.Base.Model] == "Canon EOS 5D"
    assert exif.get_ifd(ExifTags.IFD.GPSInfo)[ExifTags.GPS.GPSLatitudeRef] == "N"


# --------------------------------------------------------------------------------------------
# Orientation and sizes


def test_xmp_orientation_alone_is_applied_once() -> None:
    """Pillow also reads the orientation from XMP; the output's XMP must say 1 then."""
    decoded = decode_image(source_file("PNG", with_exif=False))
    assert_upright(decoded.pixels)
    assert decoded.metadata.exif is None  # it held nothing but the orientation
    output = encode_image(decoded)
    assert b'tiff:Orientation="1"' in reopened(output).info["xmp"]
    np.testing.assert_array_equal(decode_image(output).pixels, decoded.pixels)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_orientation_is_reset_to_one(orientation: int) -> None:
    data = source_file("PNG", orientation=orientation)
    decoded = decode_image(data)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))))
    np.testing.assert_array_equal(decoded.pixels, expected)
    output = encode_image(decoded)
    assert reopened(output).getexif()[ExifTags.Base.Orientation] == 1
    np.testing.assert_array_equal(decode_image(output).pixels, expected)


def test_pixel_dimensions_follow_a_new_size() -> None:
    """Super-resolution writes 4x the pixels: the EXIF pixel dimensions say so."""
    decoded = decode_image(source_file("JPEG"))
    larger = with_pixels(decoded, np.zeros((4 * decoded.height, 4 * decoded.width, 3), np.uint8))
    assert larger.metadata == decoded.metadata
    details = reopened(encode_image(larger, "PNG")).getexif().get_ifd(ExifTags.IFD.Exif)
    assert (details[ExifTags.Base.ExifImageWidth], details[ExifTags.Base.ExifImageHeight]) == (
        4 * decoded.width,
        4 * decoded.height,
    )


def test_layout_tags_of_a_tiff_are_not_carried() -> None:
    """A TIFF's first directory is its EXIF: sizes, strips and compression must not travel."""
    exif = Image.Exif()
    exif.load(decode_image(source_file("TIFF")).metadata.exif)
    for tag in (256, 257, 258, 259, 262, 273, 277, 278, 279, 700, 33723):
        assert tag not in exif, tag
    assert exif[ExifTags.Base.Make] == "Canon"


# --------------------------------------------------------------------------------------------
# Bad or unusual metadata


def test_corrupt_exif_does_not_make_the_image_unreadable() -> None:
    buffer = io.BytesIO()
    Image.fromarray(stored_pixels()).save(buffer, "JPEG", exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff")
    decoded = decode_image(buffer.getvalue())
    assert decoded.pixels.shape == (STORED_HEIGHT, STORED_WIDTH, 3)
    assert decoded.metadata.exif is None
    assert decode_image(encode_image(decoded)).pixels.shape == decoded.pixels.shape


def test_unreadable_exif_given_to_the_encoder_is_an_error() -> None:
    image = DecodedImage(stored_pixels(), None, "RGB", "PNG", None, ImageMetadata(exif=b"not exif"))
    with pytest.raises(ValueError, match=r"metadata.exif is not a readable EXIF block \(8 bytes\)"):
        encode_image(image)
    assert_metadata_gone(encode_image(image, strip_metadata=True))  # stripping needs no parsing


def test_xmp_too_large_for_a_jpeg_segment_is_left_out_with_a_warning() -> None:
    xmp = XMP_TEMPLATE.format(orientation=1).encode() + b" " * 70_000  # XMP packets allow padding
    image = DecodedImage(stored_pixels(), None, "RGB", "PNG", None, ImageMetadata(xmp=xmp))
    with pytest.warns(UserWarning, match=r"xmp block of 70\d+ bytes does not fit one JPEG segment"):
        jpeg = encode_image(image, "JPEG")
    assert "xmp" not in reopened(jpeg).info
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert reopened(encode_image(image, "PNG")).info["xmp"] == xmp  # PNG has no such limit


def test_bmp_writes_pixels_only() -> None:
    decoded = decode_image(source_file("JPEG"))
    bmp = decode_image(encode_image(decoded, "BMP"))
    assert bmp.metadata.is_empty and bmp.pixels.shape == decoded.pixels.shape


def test_image_metadata_validates_its_blocks() -> None:
    assert ImageMetadata(exif=b"", xmp=bytearray(b"<x/>")) == ImageMetadata(xmp=b"<x/>")
    assert ImageMetadata().is_empty and not ImageMetadata(iptc=IPTC).is_empty
    with pytest.raises(TypeError, match="ImageMetadata.xmp must be bytes or None, got str"):
        ImageMetadata(xmp="<x/>")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="metadata must be an ImageMetadata, got dict"):
        DecodedImage(stored_pixels(), None, "RGB", "PNG", None, {"exif": None})  # type: ignore[arg-type]


def test_strip_metadata_must_be_a_bool() -> None:
    image = DecodedImage(stored_pixels(), None, "RGB", "PNG", None)
    with pytest.raises(TypeError, match="strip_metadata must be True or False, got 'yes'"):
        encode_image(image, strip_metadata="yes")  # type: ignore[arg-type]
