"""Checking and converting image files: every image is made in memory with Pillow."""

from __future__ import annotations

import asyncio
import io
import random
import struct
import zlib

import pytest
from PIL import Image

from bot.images import files
from bot.images.files import (
    MASK_PROBLEM,
    MB,
    CheckedImage,
    ImageProblem,
    check_image,
    check_mask,
    check_size,
    fit_for_upload,
    pixel_count,
    prepare_for_model,
    prepare_for_vision,
)

LIMIT = 20 * MB
PIXELS = 70_000_000
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
        check_image(
            data,
            max_bytes=limits.pop("max_bytes", LIMIT),
            max_pixels=limits.pop("max_pixels", PIXELS),
            **limits,
        )
    return str(caught.value)


# --- check_image ------------------------------------------------------------------------------


def test_png_without_alpha_is_kept_as_it_is() -> None:
    data = encode(halves((64, 32)), "PNG")
    checked = check_image(data, max_bytes=LIMIT, max_pixels=PIXELS)
    assert checked == CheckedImage(data, "png", 64, 32, False)
    assert (checked.content_type, checked.filename) == ("image/png", "image.png")
    assert "data" not in repr(checked)


def test_png_with_alpha_is_seen() -> None:
    data = encode(Image.new("RGBA", (20, 20), (1, 2, 3, 100)), "PNG")
    assert check_image(data, max_bytes=LIMIT, max_pixels=PIXELS).has_alpha


@pytest.mark.parametrize(
    ("fmt", "name", "content_type"),
    [("JPEG", "image.jpg", "image/jpeg"), ("WEBP", "image.webp", "image/webp")],
)
def test_jpeg_and_webp_are_accepted(fmt: str, name: str, content_type: str) -> None:
    data = encode(halves((40, 30)), fmt)
    checked = check_image(data, max_bytes=LIMIT, max_pixels=PIXELS)
    assert (checked.width, checked.height, checked.data) == (40, 30, data)
    assert (checked.filename, checked.content_type) == (name, content_type)


def test_gif_gets_its_own_sentence() -> None:
    data = encode(halves((40, 30)).convert("P"), "GIF")
    assert problem(data) == "GIF images aren't supported: send a PNG, JPEG or WebP."


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
    assert problem(header_only_png(10_000, 7_001)) == (
        "That image is 10000×7001 pixels (70 MP); the limit is 70 MP."
    )
    assert problem(header_only_png(8, 8)) == (
        "That image is 8×8 pixels; it must be at least 16 pixels a side."
    )
    # Beyond twice Pillow's pixel limit, Image.open itself refuses it as a decompression bomb.
    assert problem(header_only_png(100_000, 100_000), max_pixels=10**11) == (
        "That image has too many pixels to open."
    )


def test_a_webp_counts_five_times_its_pixels() -> None:
    """Pillow decodes a WebP whole, with several copies: it is limited and budgeted for that."""
    flat = encode(Image.new("RGB", (1000, 800), "teal"), "WEBP")
    assert pixel_count(flat) == 5 * 800_000
    assert pixel_count(encode(Image.new("RGB", (1000, 800), "teal"), "PNG")) == 800_000
    assert problem(flat, max_pixels=3_000_000) == (
        "That image is a WebP of 0.8 MP; WebP images can have up to 0.6 MP: send a PNG or "
        "JPEG, or a smaller one."
    )
    assert check_image(flat, max_bytes=MB, max_pixels=4_000_000).format == "webp"


def rotated_jpeg(orientation: int = 6) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation  # 6: "rotate 90° clockwise to display"
    return encode(halves((80, 40)), "JPEG", quality=90, exif=exif)


def assert_upright(data: bytes, size: tuple[int, int]) -> None:
    upright = Image.open(io.BytesIO(data))
    assert upright.size == size
    assert upright.getexif().get(0x0112, 1) == 1
    # The left (red) half of the stored picture is at the top once rotated clockwise.
    assert upright.getpixel((size[0] // 2, 2))[0] > 200  # type: ignore[index]
    assert upright.getpixel((size[0] // 2, size[1] - 3))[2] > 200  # type: ignore[index]


def test_exif_rotated_photo_is_checked_as_shown_and_converted_upright() -> None:
    data = rotated_jpeg()
    checked = check_image(data, max_bytes=LIMIT, max_pixels=PIXELS)
    assert (checked.data, checked.width, checked.height, checked.orientation) == (data, 40, 80, 6)
    for_model, _ = prepare_for_model(checked, square_png_max_bytes=None, max_bytes=LIMIT)
    assert (for_model.format, for_model.width, for_model.height) == ("jpeg", 40, 80)
    assert_upright(for_model.data, (40, 80))
    assert_upright(prepare_for_vision(checked, max_bytes=LIMIT).data, (40, 80))


async def test_functions_run_in_a_thread() -> None:
    data = encode(halves((32, 32)), "PNG")
    checked = await asyncio.to_thread(check_image, data, max_bytes=LIMIT, max_pixels=PIXELS)
    assert checked.data == data


# --- check_mask -------------------------------------------------------------------------------


def checked(im: Image.Image, fmt: str = "PNG") -> CheckedImage:
    return check_image(encode(im, fmt), max_bytes=LIMIT, max_pixels=PIXELS)


def test_rgba_png_mask_of_the_right_size_is_kept() -> None:
    image = checked(halves((64, 64)))
    data = encode(mask_for((64, 64), (0, 0, 32, 32)), "PNG")
    mask = check_mask(data, image, max_bytes=LIMIT, max_pixels=PIXELS)
    assert (mask.data, mask.format, mask.has_alpha) == (data, "png", True)


def test_mask_of_the_wrong_size() -> None:
    image = checked(halves((1024, 1024)), "JPEG")
    with pytest.raises(ImageProblem) as caught:
        check_mask(
            encode(mask_for((512, 512), (0, 0, 8, 8)), "PNG"),
            image,
            max_bytes=LIMIT,
            max_pixels=PIXELS,
        )
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
        check_mask(data, image, max_bytes=LIMIT, max_pixels=PIXELS)
    assert str(caught.value) == MASK_PROBLEM


def test_damaged_mask_says_mask() -> None:
    image = checked(halves((64, 64)))
    data = encode(mask_for((64, 64), (0, 0, 8, 8)), "PNG")
    with pytest.raises(ImageProblem, match=r"^The mask is damaged and can't be read\.$"):
        check_mask(data[: len(data) - 30], image, max_bytes=LIMIT, max_pixels=PIXELS)


def test_webp_mask_becomes_an_rgba_png() -> None:
    image = checked(halves((64, 64)))
    data = encode(mask_for((64, 64), (0, 0, 32, 64)), "WEBP", lossless=True)
    mask = check_mask(data, image, max_bytes=LIMIT, max_pixels=PIXELS)
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
        encode(mask_for((600, 400), (300, 0, 600, 400)), "PNG"),
        image,
        max_bytes=LIMIT,
        max_pixels=PIXELS,
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
    mask = check_mask(
        encode(mask_for((300, 200), (0, 0, 9, 9)), "PNG"), image, max_bytes=LIMIT, max_pixels=PIXELS
    )
    assert prepare_for_model(image, mask, square_png_max_bytes=None, max_bytes=LIMIT) == (
        image,
        mask,
    )


def test_over_the_model_limit_shrinks_image_and_mask_together() -> None:
    image = checked(noise((400, 300)), "PNG")
    mask = check_mask(
        encode(mask_for((400, 300), (0, 0, 9, 9)), "PNG"), image, max_bytes=LIMIT, max_pixels=PIXELS
    )
    small, small_mask = prepare_for_model(image, mask, square_png_max_bytes=None, max_bytes=60_000)
    assert small_mask is not None
    assert len(small.data) <= 60_000
    assert (small.width, small.height) == (small_mask.width, small_mask.height)
    assert Image.open(io.BytesIO(small_mask.data)).size == (small.width, small.height)


# --- fit_for_upload ---------------------------------------------------------------------------


def test_big_opaque_png_becomes_a_jpeg_under_the_limit() -> None:
    data = encode(noise((1536, 1024)), "PNG", compress_level=1)
    assert len(data) > 4 * MB
    fitted, fmt = fit_for_upload(data, max_pixels=PIXELS, limit=1 * MB)
    assert len(fitted) <= 1 * MB
    assert fmt == "jpeg"
    out = Image.open(io.BytesIO(fitted))
    out.load()
    assert out.format == "JPEG"
    assert out.width / out.height == pytest.approx(1.5, rel=0.01)


def test_big_transparent_png_becomes_a_webp_under_the_limit() -> None:
    im = noise((800, 600), "RGBA")
    data = encode(im, "PNG", compress_level=1)
    fitted, fmt = fit_for_upload(data, max_pixels=PIXELS, limit=len(data) // 4)
    assert len(fitted) <= len(data) // 4
    assert fmt == "webp"
    out = Image.open(io.BytesIO(fitted))
    out.load()
    assert (out.format, out.mode) == ("WEBP", "RGBA")


def test_what_fits_is_unchanged() -> None:
    data = encode(halves((100, 100)), "PNG")
    assert fit_for_upload(data, max_pixels=PIXELS, limit=len(data)) == (data, "png")
    with pytest.raises(ImageProblem):
        fit_for_upload(b"<html>not an image</html>", limit=10, max_pixels=PIXELS)


# --- decoding no more than needed -------------------------------------------------------------


def grey16(size: tuple[int, int]) -> Image.Image:
    return Image.frombytes("I;16", size, random.Random(3).randbytes(size[0] * size[1] * 2))


# Widths that are multiples of nothing in particular, so rows end mid-byte and bands mid-block.
PNGS = {
    "rgb": lambda: encode(noise((1001, 777)), "PNG"),
    "rgba": lambda: encode(noise((613, 509), "RGBA"), "PNG"),
    "palette-trns": lambda: encode(noise((301, 421), "L").convert("P"), "PNG", transparency=5),
    "palette-4bit": lambda: encode(noise((123, 301), "L").convert("P", colors=16), "PNG", bits=4),
    "grey": lambda: encode(noise((517, 300), "L"), "PNG"),
    "grey-trns": lambda: encode(noise((517, 300), "L"), "PNG", transparency=7),
    "grey-alpha": lambda: encode(noise((333, 301), "LA"), "PNG"),
    "grey-16bit": lambda: encode(grey16((301, 257)), "PNG"),
    "bilevel": lambda: encode(noise((333, 299), "L").convert("1"), "PNG"),
}


@pytest.mark.parametrize("factor", [1, 2, 7, 64])
@pytest.mark.parametrize("name", list(PNGS))
def test_png_decoded_band_by_band_equals_pillows_whole_decode(name: str, factor: int) -> None:
    data = PNGS[name]()
    image = check_image(data, max_bytes=LIMIT, max_pixels=PIXELS, min_side=1)
    header = Image.open(io.BytesIO(data))
    mode = "RGBA" if image.has_alpha else "RGB"
    banded = files._png_reduced(data, header, mode, factor)
    assert banded is not None
    whole = Image.open(io.BytesIO(data)).convert(mode)
    expected = whole.reduce(factor) if factor > 1 else whole
    assert (banded.mode, banded.size) == (expected.mode, expected.size)
    assert banded.tobytes() == expected.tobytes()


def test_a_png_is_checked_and_converted_without_being_decoded_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def decoded_whole(*_args: object) -> None:
        raise AssertionError("decoded whole")

    monkeypatch.setattr(files, "_decoded_whole", decoded_whole)
    image = check_image(encode(halves((1200, 700)), "PNG"), max_bytes=LIMIT, max_pixels=PIXELS)
    square, _mask = prepare_for_model(image, square_png_max_bytes=4 * MB, max_bytes=LIMIT)
    assert (square.width, square.height) == (1024, 1024)
    vision = prepare_for_vision(image, max_bytes=LIMIT, max_side=512)
    assert (vision.width, vision.height) == (512, 299)


def test_a_16_bit_colour_png_is_decoded_whole() -> None:
    # 6 bytes a pixel: no 8-bit type to unfilter it as; Pillow decodes it (to 8 bits) instead.
    ihdr = struct.pack(">IIBBBBB", 40, 30, 16, 2, 0, 0, 0)
    rows = b"".join(b"\x01" + random.Random(row).randbytes(40 * 6) for row in range(30))
    data = build_png([(b"IHDR", ihdr), (b"IDAT", zlib.compress(rows)), (b"IEND", b"")])
    header = Image.open(io.BytesIO(data))
    assert files._png_reduced(data, header, "RGB", 2) is None
    image = check_image(data, max_bytes=LIMIT, max_pixels=PIXELS)
    square, _ = prepare_for_model(image, square_png_max_bytes=4 * MB, max_bytes=LIMIT)
    assert (square.width, square.height) == (256, 256)


def test_a_png_still_converts_if_pillow_moves_its_table_of_formats(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The band decoder borrows Pillow's private table of PNG formats; without it, PNGs are
    decoded whole rather than refused as damaged."""
    monkeypatch.setattr(files, "_png_formats", dict)
    image = check_image(encode(halves((300, 200)), "PNG"), max_bytes=LIMIT, max_pixels=PIXELS)
    square, _mask = prepare_for_model(image, square_png_max_bytes=4 * MB, max_bytes=LIMIT)
    assert (square.width, square.height) == (512, 512)


def test_a_big_jpeg_is_decoded_at_reduced_size() -> None:
    image = check_image(encode(halves((4000, 3000)), "JPEG"), max_bytes=LIMIT, max_pixels=PIXELS)
    assert files._pixels(image, "That image", at_least=400).size == (500, 375)  # 1/8 scale
    assert files._pixels(image, "That image", at_least=1000).size == (1000, 750)  # 1/4 scale


# --- prepare_for_vision -----------------------------------------------------------------------


def test_vision_gets_an_upright_picture_that_fits_as_it_came() -> None:
    image = checked(halves((2048, 1000)), "WEBP")
    assert prepare_for_vision(image, max_bytes=LIMIT) is image


@pytest.mark.parametrize(("mode", "fmt"), [("RGB", "jpeg"), ("RGBA", "webp")])
def test_vision_gets_a_larger_picture_scaled_to_2048(mode: str, fmt: str) -> None:
    picture = noise((3000, 1500), mode) if mode == "RGBA" else halves((3000, 1500))
    image = checked(picture)
    shown = prepare_for_vision(image, max_bytes=LIMIT)
    assert (shown.format, shown.width, shown.height) == (fmt, 2048, 1024)
    assert Image.open(io.BytesIO(shown.data)).size == (2048, 1024)
