"""Checking and converting image files: every image is made in memory with Pillow."""

from __future__ import annotations

import asyncio
import io
import random
import struct
import zlib

import pytest
from PIL import Image

from bot.images.files import (
    MASK_PROBLEM,
    MB,
    CheckedImage,
    ImageProblem,
    check_image,
    check_mask,
    check_size,
    fit_for_upload,
    prepare_for_model,
)

LIMIT = 20 * MB
RED = (255, 0, 0)
BLUE = (0, 0, 255)


def encode(im: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    im.save(out, fmt, **options)
    return out.getvalue()


def noise(size: tuple[int, int], mode: str = "RGB", seed: int = 0) -> Image.Image:
    channels = len(mode)
    return Image.frombytes(mode, size, random.Random(seed).randbytes(size[0] * size[1] * channels))


def halves(size: tuple[int, int]) -> Image.Image:
    """Red on the left half, blue on the right: easy to find again after a conversion."""
    im = Image.new("RGB", size, RED)
    im.paste(BLUE, (size[0] // 2, 0, size[0], size[1]))
    return im


def mask_for(size: tuple[int, int], hole: tuple[int, int, int, int]) -> Image.Image:
    """Opaque everywhere except a fully transparent `hole` (where the image should change)."""
    mask = Image.new("RGBA", size, (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), hole)
    return mask


def chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    found, pos = [], 8
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        found.append((png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]))
        pos += 12 + length
    return found


def build_png(parts: list[tuple[bytes, bytes]]) -> bytes:
    out = b"\x89PNG\r\n\x1a\n"
    for kind, body in parts:
        crc = zlib.crc32(kind + body)
        out += struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)
    return out


def header_only_png(width: int, height: int) -> bytes:
    """A valid PNG header announcing any size, with no pixels behind it."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return build_png([(b"IHDR", ihdr), (b"IEND", b"")])


def problem(data: bytes, **limits: int) -> str:
    with pytest.raises(ImageProblem) as caught:
        check_image(data, max_bytes=limits.pop("max_bytes", LIMIT), **limits)
    return str(caught.value)


# --- check_image ------------------------------------------------------------------------------


def test_png_without_alpha_is_kept_as_it_is() -> None:
    data = encode(halves((64, 32)), "PNG")
    checked = check_image(data, max_bytes=LIMIT)
    assert checked == CheckedImage(data, "png", 64, 32, False)
    assert (checked.content_type, checked.filename) == ("image/png", "image.png")
    assert "data" not in repr(checked)


def test_png_with_alpha_is_seen() -> None:
    data = encode(Image.new("RGBA", (20, 20), (1, 2, 3, 100)), "PNG")
    assert check_image(data, max_bytes=LIMIT).has_alpha


@pytest.mark.parametrize(
    ("fmt", "name", "content_type"),
    [("JPEG", "image.jpg", "image/jpeg"), ("WEBP", "image.webp", "image/webp")],
)
def test_jpeg_and_webp_are_accepted(fmt: str, name: str, content_type: str) -> None:
    data = encode(halves((40, 30)), fmt)
    checked = check_image(data, max_bytes=LIMIT)
    assert (checked.width, checked.height, checked.data) == (40, 30, data)
    assert (checked.filename, checked.content_type) == (name, content_type)


def test_gif_gets_its_own_sentence() -> None:
    data = encode(halves((40, 30)).convert("P"), "GIF")
    assert problem(data) == "GIF images can't be edited: send a PNG, JPEG or WebP."


@pytest.mark.parametrize(
    "data",
    [b"hello, this is a text file renamed to cat.png\n", b"%PDF-1.7\n%\xe2\xe3", b"", b"BMW"],
)
def test_what_is_not_an_image_is_refused_by_content(data: bytes) -> None:
    assert problem(data) == "That file is not an image: send a PNG, JPEG or WebP."


def test_truncated_png_is_damaged() -> None:
    data = encode(noise((200, 200)), "PNG", compress_level=1)
    assert problem(data[: len(data) // 2]) == "That image is damaged and can't be read."


def test_png_with_a_corrupted_idat_checksum_is_damaged() -> None:
    data = bytearray(encode(noise((64, 64)), "PNG"))
    data[data.index(b"IDAT") + 100] ^= 0xFF  # the chunk's CRC no longer matches
    assert problem(bytes(data)) == "That image is damaged and can't be read."


@pytest.mark.parametrize("damage", ["cut", "garbage"])
def test_bad_pixel_data_with_valid_checksums_is_caught_by_decoding(damage: str) -> None:
    parts = chunks(encode(noise((64, 64)), "PNG"))
    for i, (kind, body) in enumerate(parts):
        if kind == b"IDAT":
            parts[i] = (kind, body[: len(body) // 2] if damage == "cut" else b"x" * len(body))
    data = build_png(parts)  # with checksums recomputed over the damaged data
    Image.open(io.BytesIO(data)).verify()  # so verify() alone is fooled
    assert problem(data) == "That image is damaged and can't be read."


def test_size_is_checked_before_decoding() -> None:
    data = b"\x89PNG\r\n\x1a\n" + bytes(30 * MB)
    assert problem(data) == "That image is 30.0 MB; the limit is 20 MB."


def test_declared_size_alone() -> None:
    check_size(20 * MB, max_bytes=20 * MB)
    with pytest.raises(ImageProblem, match=r"^That image is 30\.0 MB; the limit is 20 MB\.$"):
        check_size(30 * MB, max_bytes=20 * MB)
    with pytest.raises(ImageProblem, match=r"^The mask is 5\.0 MB; the limit is 4 MB\.$"):
        check_size(5 * MB, max_bytes=4 * MB, what="mask")


def test_too_many_pixels_is_refused_from_the_header() -> None:
    assert problem(header_only_png(20000, 300)) == (
        "That image is 20000×300 pixels; the limit is 8192 pixels a side."
    )
    assert problem(header_only_png(8, 8)) == (
        "That image is 8×8 pixels; it must be at least 16 pixels a side."
    )
    # Beyond twice Pillow's pixel limit, Image.open itself refuses it as a decompression bomb.
    assert problem(header_only_png(100_000, 100_000), max_side=200_000) == (
        "That image has too many pixels to open."
    )


def test_exif_rotated_photo_is_made_upright() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    data = encode(halves((80, 40)), "JPEG", quality=90, exif=exif)
    checked = check_image(data, max_bytes=LIMIT)
    assert (checked.format, checked.width, checked.height) == ("jpeg", 40, 80)
    upright = Image.open(io.BytesIO(checked.data))
    assert upright.size == (40, 80)
    assert upright.getexif().get(0x0112, 1) == 1
    # The left (red) half of the stored picture is at the top once rotated clockwise.
    assert upright.getpixel((20, 5))[0] > 200  # type: ignore[index]
    assert upright.getpixel((20, 75))[2] > 200  # type: ignore[index]


async def test_functions_run_in_a_thread() -> None:
    data = encode(halves((32, 32)), "PNG")
    checked = await asyncio.to_thread(check_image, data, max_bytes=LIMIT)
    assert checked.data == data


# --- check_mask -------------------------------------------------------------------------------


def checked(im: Image.Image, fmt: str = "PNG") -> CheckedImage:
    return check_image(encode(im, fmt), max_bytes=LIMIT)


def test_rgba_png_mask_of_the_right_size_is_kept() -> None:
    image = checked(halves((64, 64)))
    data = encode(mask_for((64, 64), (0, 0, 32, 32)), "PNG")
    mask = check_mask(data, image, max_bytes=LIMIT)
    assert (mask.data, mask.format, mask.has_alpha) == (data, "png", True)


def test_mask_of_the_wrong_size() -> None:
    image = checked(halves((1024, 1024)), "JPEG")
    with pytest.raises(ImageProblem) as caught:
        check_mask(encode(mask_for((512, 512), (0, 0, 8, 8)), "PNG"), image, max_bytes=LIMIT)
    assert str(caught.value) == (
        "The mask must be the same size as the image (1024×1024), but it is 512×512."
    )


@pytest.mark.parametrize(
    "data",
    [
        encode(Image.new("RGB", (64, 64)), "PNG"),  # no alpha
        encode(Image.new("RGBA", (64, 64), (0, 0, 0, 255)), "PNG"),  # alpha, but opaque
        encode(Image.new("RGB", (64, 64)), "JPEG"),
        b"just text",
    ],
    ids=["no-alpha", "opaque-alpha", "jpeg", "text"],
)
def test_mask_without_transparency_is_refused(data: bytes) -> None:
    image = checked(halves((64, 64)))
    with pytest.raises(ImageProblem) as caught:
        check_mask(data, image, max_bytes=LIMIT)
    assert str(caught.value) == MASK_PROBLEM


def test_damaged_mask_says_mask() -> None:
    image = checked(halves((64, 64)))
    data = encode(mask_for((64, 64), (0, 0, 8, 8)), "PNG")
    with pytest.raises(ImageProblem, match=r"^The mask is damaged and can't be read\.$"):
        check_mask(data[: len(data) - 30], image, max_bytes=LIMIT)


def test_webp_mask_becomes_an_rgba_png() -> None:
    image = checked(halves((64, 64)))
    data = encode(mask_for((64, 64), (0, 0, 32, 64)), "WEBP", lossless=True)
    mask = check_mask(data, image, max_bytes=LIMIT)
    assert mask.format == "png"
    converted = Image.open(io.BytesIO(mask.data))
    assert (converted.format, converted.mode, converted.size) == ("PNG", "RGBA", (64, 64))
    assert converted.getpixel((10, 10)) == (0, 0, 0, 0)
    assert converted.getpixel((50, 10))[3] == 255  # type: ignore[index]


# --- prepare_for_model ------------------------------------------------------------------------


def test_dall_e_2_gets_a_padded_square_png_with_its_mask_aligned() -> None:
    image = checked(halves((600, 400)), "JPEG")
    # The person marks the blue (right) half to change.
    mask = check_mask(
        encode(mask_for((600, 400), (300, 0, 600, 400)), "PNG"), image, max_bytes=LIMIT
    )
    square, square_mask = prepare_for_model(
        image, mask, square_png_max_bytes=4 * MB, max_bytes=LIMIT
    )
    assert square_mask is not None
    assert len(square.data) <= 4 * MB and len(square_mask.data) <= 4 * MB
    out = Image.open(io.BytesIO(square.data))
    out_mask = Image.open(io.BytesIO(square_mask.data))
    assert (out.format, out.mode, out.size) == ("PNG", "RGBA", (1024, 1024))
    assert (out_mask.format, out_mask.mode, out_mask.size) == ("PNG", "RGBA", (1024, 1024))
    assert (square.width, square.height, square.has_alpha) == (1024, 1024, True)

    # 600×400 scaled to 1024×683, centred: rows 170 to 853 hold the picture, the rest is padding.
    def colour(x: int, y: int) -> str:
        r, _g, b, a = out.getpixel((x, y))  # type: ignore[misc]
        if a == 0:
            return "clear"
        return "red" if r > 200 and b < 60 else "blue" if b > 200 and r < 60 else "other"

    def marked(x: int, y: int) -> bool:
        return out_mask.getpixel((x, y))[3] == 0  # type: ignore[index]

    for x, y in [(20, 512), (500, 200), (500, 840)]:
        assert (colour(x, y), marked(x, y)) == ("red", False)
    for x, y in [(1000, 512), (530, 200), (530, 840)]:
        assert (colour(x, y), marked(x, y)) == ("blue", True)
    for x, y in [(512, 5), (512, 160), (512, 1018)]:
        assert (colour(x, y), marked(x, y)) == ("clear", False)


def test_dall_e_2_without_a_mask_may_change_the_whole_picture_but_not_the_padding() -> None:
    image = checked(halves((600, 400)), "JPEG")
    _square, mask = prepare_for_model(image, square_png_max_bytes=4 * MB, max_bytes=LIMIT)
    assert mask is not None
    out_mask = Image.open(io.BytesIO(mask.data))
    # Rows 170 to 853 hold the picture: transparent (may change); the padding is opaque.
    assert out_mask.getpixel((512, 512))[3] == 0  # type: ignore[index]
    assert out_mask.getpixel((20, 200))[3] == 0  # type: ignore[index]
    assert out_mask.getpixel((512, 5))[3] == 255  # type: ignore[index]
    assert out_mask.getpixel((512, 1018))[3] == 255  # type: ignore[index]


def test_dall_e_2_square_steps_down_until_it_fits() -> None:
    image = checked(noise((600, 600)), "PNG")  # about 3 MB as a 1024 px RGBA PNG
    square, mask = prepare_for_model(image, square_png_max_bytes=1 * MB, max_bytes=LIMIT)
    assert (square.width, square.height) == (512, 512)
    assert mask is not None and (mask.width, mask.height) == (512, 512)
    assert len(square.data) <= 1 * MB
    assert Image.open(io.BytesIO(square.data)).size == (512, 512)


def test_other_models_get_the_bytes_untouched() -> None:
    image = checked(halves((300, 200)), "WEBP")
    mask = check_mask(encode(mask_for((300, 200), (0, 0, 9, 9)), "PNG"), image, max_bytes=LIMIT)
    assert prepare_for_model(image, mask, square_png_max_bytes=None, max_bytes=LIMIT) == (
        image,
        mask,
    )


def test_over_the_model_limit_shrinks_image_and_mask_together() -> None:
    image = checked(noise((400, 300)), "PNG")
    mask = check_mask(encode(mask_for((400, 300), (0, 0, 9, 9)), "PNG"), image, max_bytes=LIMIT)
    small, small_mask = prepare_for_model(image, mask, square_png_max_bytes=None, max_bytes=60_000)
    assert small_mask is not None
    assert len(small.data) <= 60_000
    assert (small.width, small.height) == (small_mask.width, small_mask.height)
    assert Image.open(io.BytesIO(small_mask.data)).size == (small.width, small.height)


# --- fit_for_upload ---------------------------------------------------------------------------


def test_big_opaque_png_becomes_a_jpeg_under_the_limit() -> None:
    data = encode(noise((1536, 1024)), "PNG", compress_level=1)
    assert len(data) > 4 * MB
    fitted, fmt = fit_for_upload(data, limit=1 * MB)
    assert len(fitted) <= 1 * MB
    assert fmt == "jpeg"
    out = Image.open(io.BytesIO(fitted))
    out.load()
    assert out.format == "JPEG"
    assert out.width / out.height == pytest.approx(1.5, rel=0.01)


def test_big_transparent_png_becomes_a_webp_under_the_limit() -> None:
    im = noise((800, 600), "RGBA")
    data = encode(im, "PNG", compress_level=1)
    fitted, fmt = fit_for_upload(data, limit=len(data) // 4)
    assert len(fitted) <= len(data) // 4
    assert fmt == "webp"
    out = Image.open(io.BytesIO(fitted))
    out.load()
    assert (out.format, out.mode) == ("WEBP", "RGBA")


def test_what_fits_is_unchanged() -> None:
    data = encode(halves((100, 100)), "PNG")
    assert fit_for_upload(data, limit=len(data)) == (data, "png")
    with pytest.raises(ImageProblem):
        fit_for_upload(b"<html>not an image</html>", limit=10)
