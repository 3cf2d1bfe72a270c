"""restoration.io.codec: every supported mode and format, EXIF orientation, ICC, alpha, bad inputs."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageCms, ImageOps

from restoration.io.codec import (
    DEFAULT_MAX_PIXELS,
    DecodedImage,
    ImageDecodeError,
    check_image_size,
    decode_image,
    read_image_file,
    with_pixels,
)
from restoration.io.encode import (
    ENCODE_FORMATS,
    FORMAT_ALIASES,
    encode_image,
    normalize_format,
    output_format_for,
)
from restoration.io.pixels import pixels_to_tensor, tensor_to_pixels, to_uint8

RNG = np.random.default_rng(1234)
SRGB_PROFILE = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def save(image: Image.Image, format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def random_pixels(height: int, width: int, channels: int, dtype: type = np.uint8) -> np.ndarray:
    return RNG.integers(0, np.iinfo(dtype).max + 1, (height, width, channels), dtype=dtype)


def raw_png(samples: np.ndarray, color_type: int, bit_depth: int = 16) -> bytes:
    """A minimal PNG written independently of the codec: unfiltered rows, one IDAT chunk."""
    height, width = samples.shape[:2]
    rows = samples.astype(">u2" if bit_depth == 16 else np.uint8).reshape(height, -1).view(np.uint8)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (
            struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
        )

    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(peak**2 / mse)


# --------------------------------------------------------------------------------------------
# Modes


@pytest.mark.parametrize(
    ("mode", "channels", "has_alpha"),
    [("L", 1, False), ("LA", 1, True), ("RGB", 3, False), ("RGBA", 3, True)],
)
def test_eight_bit_png_modes_round_trip_exactly(mode: str, channels: int, has_alpha: bool) -> None:
    planes = random_pixels(13, 17, channels + has_alpha)
    source = Image.fromarray(planes[:, :, 0] if mode == "L" else planes)
    assert source.mode == mode

    decoded = decode_image(save(source, "PNG"))

    assert (decoded.mode, decoded.format, decoded.bit_depth) == (mode, "PNG", 8)
    assert (decoded.height, decoded.width, decoded.channels) == (13, 17, channels)
    assert decoded.is_gray == (channels == 1)
    np.testing.assert_array_equal(decoded.pixels, planes[:, :, :channels])
    if has_alpha:
        np.testing.assert_array_equal(decoded.alpha, planes[:, :, -1])
    else:
        assert decoded.alpha is None
    again = decode_image(encode_image(decoded))
    np.testing.assert_array_equal(again.pixels, decoded.pixels)
    if has_alpha:
        np.testing.assert_array_equal(again.alpha, decoded.alpha)


def test_palette_with_transparency_becomes_rgba() -> None:
    palette = Image.new("P", (4, 2))
    palette.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (256 * 3 - 9))
    palette.putdata([0, 1, 2, 0, 1, 2, 0, 1])
    data = save(palette, "PNG", transparency=1)  # palette index 1 (green) is transparent

    decoded = decode_image(data)

    assert decoded.mode == "P" and decoded.channels == 3
    np.testing.assert_array_equal(decoded.pixels[0, 0], [255, 0, 0])
    np.testing.assert_array_equal(decoded.pixels[0, 2], [0, 0, 255])
    np.testing.assert_array_equal(decoded.alpha, [[255, 0, 255, 255], [0, 255, 255, 0]])


def test_palette_without_transparency_becomes_rgb() -> None:
    image = Image.fromarray(random_pixels(8, 9, 3)).quantize(16)
    decoded = decode_image(save(image, "PNG"))
    assert decoded.mode == "P" and decoded.alpha is None
    np.testing.assert_array_equal(decoded.pixels, np.asarray(image.convert("RGB")))


def test_rgb_color_key_transparency_becomes_alpha() -> None:
    pixels = np.zeros((2, 3, 3), np.uint8)
    pixels[0, 1] = (10, 20, 30)
    decoded = decode_image(save(Image.fromarray(pixels), "PNG", transparency=(10, 20, 30)))
    np.testing.assert_array_equal(decoded.alpha, [[255, 0, 255], [255, 255, 255]])


def test_bilevel_becomes_gray_0_or_255() -> None:
    bits = RNG.integers(0, 2, (6, 11)).astype(bool)
    decoded = decode_image(save(Image.fromarray(bits), "PNG"))
    assert decoded.mode == "1" and decoded.channels == 1 and decoded.pixels.dtype == np.uint8
    np.testing.assert_array_equal(decoded.pixels[:, :, 0], np.where(bits, 255, 0))


def test_cmyk_jpeg_becomes_rgb() -> None:
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # no cyan, full magenta + yellow: red
    decoded = decode_image(save(cmyk, "JPEG", quality=95))
    assert (decoded.mode, decoded.format, decoded.channels, decoded.alpha) == ("CMYK", "JPEG", 3, None)
    red, green, blue = decoded.pixels[8, 8].astype(int)
    assert red > 240 and green < 15 and blue < 15


def test_first_frame_of_animated_gif() -> None:
    frames = [Image.new("RGB", (5, 4), color) for color in ((255, 0, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    decoded = decode_image(buffer.getvalue())
    assert decoded.format == "GIF" and decoded.pixels.shape == (4, 5, 3)
    np.testing.assert_array_equal(decoded.pixels[0, 0], [255, 0, 0])
    assert decode_image(encode_image(decoded)).format == "PNG"  # GIF is not written: PNG instead


# --------------------------------------------------------------------------------------------
# 16 bit


@pytest.mark.parametrize("format", ["PNG", "TIFF"])
def test_sixteen_bit_gray_from_pillow_round_trips_exactly(format: str) -> None:
    gray = random_pixels(9, 14, 1, np.uint16)[:, :, 0]
    decoded = decode_image(save(Image.fromarray(gray), format))
    assert decoded.mode.startswith("I;16") and decoded.bit_depth == 16 and decoded.channels == 1
    np.testing.assert_array_equal(decoded.pixels[:, :, 0], gray)
    np.testing.assert_array_equal(decode_image(encode_image(decoded)).pixels, decoded.pixels)


@pytest.mark.parametrize(("color_type", "samples"), [(2, 3), (6, 4), (4, 2)])
def test_sixteen_bit_png_with_several_samples_decodes_losslessly(color_type: int, samples: int) -> None:
    planes = random_pixels(7, 10, samples, np.uint16)
    decoded = decode_image(raw_png(planes, color_type))
    color = 3 if samples >= 3 else 1
    assert decoded.bit_depth == 16 and decoded.channels == color
    np.testing.assert_array_equal(decoded.pixels, planes[:, :, :color])
    if samples in (2, 4):
        np.testing.assert_array_equal(decoded.alpha, planes[:, :, -1])
    else:
        assert decoded.alpha is None


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("has_alpha", [False, True])
@pytest.mark.parametrize("format", ["PNG", "TIFF"])
def test_sixteen_bit_encode_round_trips_exactly(channels: int, has_alpha: bool, format: str) -> None:
    pixels = random_pixels(11, 6, channels, np.uint16)
    alpha = random_pixels(11, 6, 1, np.uint16)[:, :, 0] if has_alpha else None
    image = DecodedImage(pixels=pixels, alpha=alpha, mode="RGB", format=format, icc_profile=None)

    decoded = decode_image(encode_image(image))

    assert decoded.format == format and decoded.bit_depth == 16
    np.testing.assert_array_equal(decoded.pixels, pixels)
    if has_alpha:
        np.testing.assert_array_equal(decoded.alpha, alpha)
    else:
        assert decoded.alpha is None


def test_sixteen_bit_rgb_png_matches_opencv() -> None:
    """Cross-check against an independent PNG codec, whose encoder uses every row filter."""
    cv2 = pytest.importorskip("cv2")
    # A smooth gradient plus noise, so the encoder picks Sub/Up/Average/Paeth filters.
    ramp = np.linspace(0, 60000, 64, dtype=np.uint16)
    pixels = (ramp[None, :, None] + random_pixels(48, 64, 3, np.uint16) // 16).astype(np.uint16)
    ok, encoded = cv2.imencode(".png", pixels[:, :, ::-1])  # OpenCV is BGR
    assert ok
    np.testing.assert_array_equal(decode_image(encoded.tobytes()).pixels, pixels)

    ours = encode_image(DecodedImage(pixels, None, "RGB", "PNG", None))
    np.testing.assert_array_equal(
        cv2.imdecode(np.frombuffer(ours, np.uint8), cv2.IMREAD_UNCHANGED)[:, :, ::-1], pixels
    )


def test_sixteen_bit_rgb_tiff_from_tifffile_decodes_losslessly() -> None:
    import tifffile  # the codec's own 16-bit TIFF path needs it: missing is a failure, not a skip
    pixels = random_pixels(12, 8, 3, np.uint16)
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, pixels, photometric="rgb")
    decoded = decode_image(buffer.getvalue())
    assert (decoded.format, decoded.mode, decoded.bit_depth) == ("TIFF", "RGB", 16)
    np.testing.assert_array_equal(decoded.pixels, pixels)


@pytest.mark.parametrize("format", ["JPEG", "WEBP", "BMP"])
def test_sixteen_bit_to_eight_bit_formats_rounds_to_nearest(format: str) -> None:
    pixels = np.full((8, 8, 3), 257 * 100 + 128, np.uint16)  # 100.5 on the 8-bit scale
    decoded = decode_image(encode_image(DecodedImage(pixels, None, "RGB", "PNG", None), format))
    assert decoded.bit_depth == 8
    assert np.all(np.abs(decoded.pixels.astype(int) - 100) <= 2)


# --------------------------------------------------------------------------------------------
# EXIF orientation


def test_exif_orientation_6_rotates_clockwise() -> None:
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :20] = (255, 0, 0)  # left half red
    stored[:, 20:] = (0, 0, 255)  # right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # display = stored rotated 90 degrees clockwise
    data = save(Image.fromarray(stored), "JPEG", quality=95, exif=exif)

    decoded = decode_image(data)

    assert (decoded.width, decoded.height) == (20, 40)
    top, bottom = decoded.pixels[5, 10].astype(int), decoded.pixels[34, 10].astype(int)
    assert top[0] > 200 and top[2] < 50  # the red left half is now on top
    assert bottom[2] > 200 and bottom[0] < 50
    # Written back without an orientation tag: decoding again does not rotate a second time.
    output = encode_image(decoded, "JPEG")
    assert Image.open(io.BytesIO(output)).getexif().get(0x0112) is None
    assert (decode_image(output).width, decode_image(output).height) == (20, 40)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_matches_pillow(orientation: int) -> None:
    stored = random_pixels(5, 7, 4)
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = save(Image.fromarray(stored), "PNG", exif=exif)

    decoded = decode_image(data)

    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))))
    np.testing.assert_array_equal(decoded.pixels, expected[:, :, :3])
    np.testing.assert_array_equal(decoded.alpha, expected[:, :, 3])


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_of_a_tiff_is_applied_once(orientation: int) -> None:
    """Pillow's TIFF loader turns the pixels itself: the codec must not turn them again."""
    stored = random_pixels(5, 7, 3)
    data = save(Image.fromarray(stored), "TIFF", tiffinfo={0x0112: orientation, 0x010F: "Canon"})

    decoded = decode_image(data)

    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))))
    np.testing.assert_array_equal(decoded.pixels, expected)
    np.testing.assert_array_equal(decode_image(encode_image(decoded)).pixels, expected)


# --------------------------------------------------------------------------------------------
# ICC, alpha, formats


@pytest.mark.parametrize("format", ["PNG", "JPEG", "WEBP", "TIFF"])
def test_icc_profile_is_kept(format: str) -> None:
    data = save(Image.fromarray(random_pixels(8, 8, 3)), format, icc_profile=SRGB_PROFILE)
    decoded = decode_image(data)
    assert decoded.icc_profile == SRGB_PROFILE
    assert decode_image(encode_image(decoded)).icc_profile == SRGB_PROFILE


@pytest.mark.parametrize("format", ["PNG", "TIFF"])
def test_icc_profile_is_kept_at_sixteen_bit(format: str) -> None:
    image = DecodedImage(random_pixels(4, 5, 3, np.uint16), None, "RGB", format, SRGB_PROFILE)
    assert decode_image(encode_image(image)).icc_profile == SRGB_PROFILE


def test_rgb_profile_is_not_written_for_gray_pixels() -> None:
    gray = DecodedImage(random_pixels(4, 4, 1), None, "L", "PNG", SRGB_PROFILE)
    assert decode_image(encode_image(gray)).icc_profile is None


@pytest.mark.parametrize(
    ("format", "keeps_alpha"),
    [("PNG", True), ("WEBP", True), ("TIFF", True), ("JPEG", False), ("BMP", False)],
)
def test_alpha_is_reattached_where_the_format_has_it(format: str, keeps_alpha: bool) -> None:
    alpha = np.tile(np.linspace(0, 255, 16).astype(np.uint8), (16, 1))
    image = DecodedImage(random_pixels(16, 16, 3), alpha, "RGBA", "PNG", None)
    decoded = decode_image(encode_image(image, format))
    if keeps_alpha:
        assert decoded.alpha is not None
        assert np.abs(decoded.alpha.astype(int) - alpha).max() <= 2  # lossy WEBP may move it slightly
    else:
        assert decoded.alpha is None


@pytest.mark.parametrize(
    ("format", "min_psnr"),
    [
        ("PNG", np.inf),
        ("TIFF", np.inf),
        ("BMP", np.inf),
        ("JPEG", 33.0),
        ("WEBP", 30.0),
        ("jpg", 33.0),
        ("tif", np.inf),
    ],
)
def test_every_output_format_decodes(astronaut: np.ndarray, format: str, min_psnr: float) -> None:
    image = DecodedImage(astronaut[:128, :160], None, "RGB", "PNG", None)
    decoded = decode_image(encode_image(image, format, quality=95))
    assert decoded.format == {"jpg": "JPEG", "tif": "TIFF"}.get(format, format)
    assert decoded.pixels.shape == (128, 160, 3)
    assert psnr(decoded.pixels, image.pixels) >= min_psnr


def test_gray_through_webp_comes_back_rgb() -> None:
    gray = DecodedImage(random_pixels(8, 8, 1), None, "L", "PNG", None)
    decoded = decode_image(encode_image(gray, "WEBP", quality=100))
    assert decoded.channels == 3
    # Lossy WebP stores YUV, so the channels of a gray picture agree only to within rounding.
    assert np.abs(decoded.pixels.astype(int) - decoded.pixels[:, :, :1]).max() <= 2


@pytest.mark.parametrize("name", ["astronaut", "chelsea"])
def test_scikit_image_photos_round_trip(name: str) -> None:
    from skimage import data

    photo = getattr(data, name)()
    png = decode_image(encode_image(DecodedImage(photo, None, "RGB", "PNG", None)))
    np.testing.assert_array_equal(png.pixels, photo)
    jpeg = decode_image(encode_image(png, "JPEG", quality=90))
    assert jpeg.pixels.shape == photo.shape and psnr(jpeg.pixels, photo) > 30


def test_benchmark_images_decode_and_round_trip(cbsd68_dir: Path) -> None:
    paths = sorted(cbsd68_dir.glob("*.png"))[:3]
    assert paths, f"no PNG files in {cbsd68_dir}"
    for path in paths:
        decoded = read_image_file(path)
        assert decoded.format == "PNG" and decoded.channels == 3 and decoded.bit_depth == 8
        assert min(decoded.width, decoded.height) >= 300  # CBSD68 images are 481x321 or 321x481
        np.testing.assert_array_equal(decode_image(encode_image(decoded)).pixels, decoded.pixels)


# --------------------------------------------------------------------------------------------
# Bad inputs


PNG_BYTES = save(Image.fromarray(random_pixels(32, 32, 3)), "PNG")
JPEG_BYTES = save(Image.fromarray(random_pixels(64, 64, 3)), "JPEG")


def _png() -> bytes:
    return PNG_BYTES


def _flip_bytes(data: bytes, start: int, stop: int) -> bytes:
    return data[:start] + bytes(byte ^ 0xFF for byte in data[start:stop]) + data[stop:]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (PNG_BYTES[: len(PNG_BYTES) // 2], "truncated"),
        (JPEG_BYTES[: len(JPEG_BYTES) // 2], "truncated"),
        (bytes(RNG.integers(0, 256, 500, dtype=np.uint8)), "not a recognized image format"),
        (b"name,value\nfoo,1\n", "not a recognized image format"),
        (_flip_bytes(PNG_BYTES, 12, 16), "corrupt PNG data"),  # the IHDR chunk's name
        (JPEG_BYTES[:2] + b"\x00" * 100, "corrupt|not a recognized"),
    ],
    ids=[
        "empty",
        "truncated-png",
        "truncated-jpeg",
        "random-bytes",
        "text",
        "bad-png-header",
        "bad-jpeg-header",
    ],
)
def test_bad_input_raises_a_readable_decode_error(data: bytes, reason: str) -> None:
    with pytest.raises(ImageDecodeError, match=reason):
        decode_image(data)


def test_too_many_pixels_is_refused_before_decoding() -> None:
    data = save(Image.new("RGB", (100, 50)), "PNG")
    with pytest.raises(ImageDecodeError, match=r"image has 5000 pixels \(100x50\), more than the limit 4999"):
        decode_image(data, max_pixels=4999)
    assert decode_image(data, max_pixels=5000).width == 100


def test_pillow_decompression_bomb_guard_becomes_decode_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    data = save(Image.new("L", (100, 50)), "PNG")  # 5000 pixels: more than twice Pillow's limit
    with pytest.raises(ImageDecodeError, match="MAX_IMAGE_PIXELS"):
        decode_image(data, max_pixels=DEFAULT_MAX_PIXELS)


def test_float_images_are_rejected_with_a_reason() -> None:
    data = save(Image.fromarray(np.ones((4, 4), np.float32)), "TIFF")
    with pytest.raises(ImageDecodeError, match="mode F"):
        decode_image(data)


def test_unsupported_modes_are_named_with_the_supported_ones() -> None:
    data = save(Image.new("LAB", (4, 4)), "TIFF")
    with pytest.raises(ImageDecodeError, match=r"unsupported image mode 'LAB'; supported modes: 1, L, LA"):
        decode_image(data)


def test_32_bit_integer_images_must_fit_16_bits() -> None:
    fits = Image.fromarray(np.array([[0, 65535]], np.int32))
    assert decode_image(save(fits, "TIFF")).pixels.dtype == np.uint16
    too_wide = Image.fromarray(np.array([[0, 70000]], np.int32))
    with pytest.raises(ImageDecodeError, match="outside the 16-bit range"):
        decode_image(save(too_wide, "TIFF"))


@pytest.mark.parametrize(
    ("argument", "error"), [({"max_pixels": 0}, ValueError), ({"max_pixels": 1.5}, ValueError)]
)
def test_decode_argument_errors(argument: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error, match="max_pixels"):
        decode_image(_png(), **argument)


def test_decode_rejects_non_bytes() -> None:
    with pytest.raises(TypeError, match="bytes"):
        decode_image("image.png")  # type: ignore[arg-type]


def test_encode_argument_errors() -> None:
    image = DecodedImage(random_pixels(4, 4, 3), None, "RGB", "PNG", None)
    with pytest.raises(ValueError, match="cannot encode format 'GIF'; supported: BMP, JPEG, PNG, TIFF, WEBP"):
        encode_image(image, "GIF")
    with pytest.raises(ValueError, match="quality"):
        encode_image(image, "JPEG", quality=0)


def test_read_image_file_names_the_path(tmp_path: Path) -> None:
    good = tmp_path / "good.png"
    good.write_bytes(_png())
    assert read_image_file(good).width == 32
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(ImageDecodeError, match=r"bad\.png: not a recognized image format"):
        read_image_file(bad)


@pytest.mark.parametrize(
    ("pixels", "alpha", "message"),
    [
        (np.zeros((4, 4), np.uint8), None, "H x W x C"),
        (np.zeros((4, 4, 2), np.uint8), None, "H x W x C"),
        (np.zeros((4, 4, 3), np.float32), None, "uint8 or uint16"),
        (np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5), np.uint8), "alpha must be"),
        (np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.uint16), "alpha dtype"),
    ],
)
def test_decoded_image_validates_its_arrays(
    pixels: np.ndarray, alpha: np.ndarray | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        DecodedImage(pixels, alpha, "RGB", "PNG", None)


# --------------------------------------------------------------------------------------------
# Tensors and new pixels


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("channels", [1, 3])
def test_pixels_tensor_round_trip_is_exact(dtype: type, channels: int) -> None:
    pixels = random_pixels(6, 9, channels, dtype)
    tensor = pixels_to_tensor(pixels)
    assert tensor.dtype == torch.float32 and tuple(tensor.shape) == (channels, 6, 9)
    assert float(tensor.min()) >= 0.0 and float(tensor.max()) <= 1.0
    np.testing.assert_array_equal(tensor_to_pixels(tensor, dtype), pixels)


def test_tensor_to_pixels_clips_rounds_and_zeroes_nan() -> None:
    tensor = torch.tensor([[[-0.5, 0.5, 1.5, float("nan")]]])
    np.testing.assert_array_equal(tensor_to_pixels(tensor)[0, :, 0], [0, 128, 255, 0])
    np.testing.assert_array_equal(tensor_to_pixels(tensor, np.uint16)[0, :, 0], [0, 32768, 65535, 0])


@pytest.mark.parametrize(
    ("tensor", "dtype", "error", "message"),
    [
        (torch.zeros(2, 4, 4), np.uint8, ValueError, "C x H x W"),
        (torch.zeros(1, 3, 4, 4), np.uint8, ValueError, "C x H x W"),
        (torch.zeros(3, 4, 4, dtype=torch.uint8), np.uint8, TypeError, "floating point"),
        (torch.zeros(3, 4, 4), np.int32, ValueError, "uint8 or uint16"),
    ],
)
def test_tensor_to_pixels_errors(
    tensor: torch.Tensor, dtype: type, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        tensor_to_pixels(tensor, dtype)


def test_with_pixels_resizes_and_rescales_alpha() -> None:
    alpha = np.zeros((10, 12), np.uint8)
    alpha[:, 6:] = 255
    image = DecodedImage(random_pixels(10, 12, 3), alpha, "RGBA", "PNG", SRGB_PROFILE)

    larger = with_pixels(image, random_pixels(20, 24, 3, np.uint16))

    assert (larger.mode, larger.format, larger.icc_profile) == ("RGBA", "PNG", SRGB_PROFILE)
    assert larger.alpha is not None and larger.alpha.shape == (20, 24) and larger.alpha.dtype == np.uint16
    assert larger.alpha[10, 0] == 0 and larger.alpha[10, 23] == 65535
    same_size = with_pixels(image, random_pixels(10, 12, 3))
    assert same_size.alpha is image.alpha
    np.testing.assert_array_equal(decode_image(encode_image(larger)).alpha, larger.alpha)


# --------------------------------------------------------------------------------------------
# PNG compression


@pytest.mark.parametrize("bit_depth", [8, 16])
def test_png_compression_trades_size_for_speed_losslessly(astronaut: np.ndarray, bit_depth: int) -> None:
    pixels = astronaut[:128, :128] if bit_depth == 8 else astronaut[:128, :128].astype(np.uint16) * 257
    image = DecodedImage(pixels, None, "RGB", "PNG", None)

    sizes = {level: len(encode_image(image, "PNG", png_compression=level)) for level in (0, 1, 9)}

    assert sizes[0] > sizes[1] > sizes[9], sizes  # 0 stores, 9 is smallest
    assert sizes[0] > pixels.nbytes  # stored: every byte plus the row filters and headers
    for level in (0, 1, 9):
        decoded = decode_image(encode_image(image, "PNG", png_compression=level))
        np.testing.assert_array_equal(decoded.pixels, pixels)
    assert encode_image(image, "PNG") == encode_image(image, "PNG", png_compression=1)  # the default


@pytest.mark.parametrize("level", [-1, 10, 1.5, True, "6", None])
def test_png_compression_outside_0_to_9_is_refused(level: object) -> None:
    image = DecodedImage(random_pixels(4, 4, 3), None, "RGB", "PNG", None)
    with pytest.raises(ValueError, match=r"png_compression must be an integer zlib level in 0\.\.9, got"):
        encode_image(image, "PNG", png_compression=level)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="png_compression"):
        encode_image(image, "JPEG", png_compression=level)  # type: ignore[arg-type]  # checked for all formats


# --------------------------------------------------------------------------------------------
# Shared helpers: 8-bit conversion, format names, size checks


def test_to_uint8_rounds_every_16_bit_level_to_nearest() -> None:
    levels = np.arange(65536, dtype=np.uint16)
    converted = to_uint8(levels)
    assert converted.dtype == np.uint8
    # The float rounding that other modules used gives the same for every level (no ties exist).
    np.testing.assert_array_equal(converted, np.round(levels / 257.0).astype(np.uint8))
    np.testing.assert_array_equal(to_uint8(np.array([0, 128, 129, 257 * 100, 65535], np.uint16)), [0, 0, 1, 100, 255])
    eight_bit = random_pixels(3, 4, 3)
    assert to_uint8(eight_bit) is eight_bit


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        (np.zeros((2, 2), np.float32), ValueError, "uint8 or uint16, got float32"),
        (np.zeros((2, 2), np.int32), ValueError, "uint8 or uint16, got int32"),
        ([1, 2], TypeError, "numpy array, got list"),
    ],
)
def test_to_uint8_refuses_other_types(value: object, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        to_uint8(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "expected"),
    [("jpg", "JPEG"), ("JPEG", "JPEG"), ("jpe", "JPEG"), ("MPO", "JPEG"), ("tif", "TIFF"), (" png ", "PNG"), ("gif", "GIF")],
)
def test_normalize_format(name: str, expected: str) -> None:
    assert normalize_format(name) == expected


def test_format_aliases_name_writable_formats_and_cannot_change() -> None:
    assert set(FORMAT_ALIASES.values()) <= ENCODE_FORMATS
    with pytest.raises(TypeError):
        FORMAT_ALIASES["PNG8"] = "PNG"  # type: ignore[index]
    with pytest.raises(TypeError, match="format must be a string, got int"):
        normalize_format(5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("source", "expected"), [("JPEG", "JPEG"), ("MPO", "JPEG"), ("tif", "TIFF"), ("GIF", "PNG"), ("ICO", "PNG")]
)
def test_output_format_for_a_source(source: str, expected: str) -> None:
    assert output_format_for(source) == expected
    image = DecodedImage(random_pixels(4, 4, 3), None, "RGB", source, None)
    assert Image.open(io.BytesIO(encode_image(image))).format == expected


def test_check_image_size() -> None:
    check_image_size(height=50, width=100, max_pixels=5000)
    check_image_size(height=np.int64(3), width=4)
    with pytest.raises(ValueError, match=r"image has 5000 pixels \(100x50\), more than the limit 4999"):
        check_image_size(height=50, width=100, max_pixels=4999)
    with pytest.raises(ValueError, match=r"mask width must be a positive integer, got 0 \(mask 0x7\)"):
        check_image_size(height=7, width=0, name="mask")
    with pytest.raises(ValueError, match="image height must be a positive integer, got 2.5"):
        check_image_size(height=2.5, width=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        check_image_size(7, 3)  # type: ignore[misc]  # keyword-only: the order cannot be mixed up
