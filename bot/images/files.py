"""Checking and converting image files for /image and /edit: bytes in, bytes out.

Knows nothing of Discord or the API. Every public function is synchronous and CPU-bound (Pillow
decodes and encodes), so async code calls it as ``await asyncio.to_thread(check_image, data,
max_bytes=...)``. That is safe and worth it: the functions share no mutable state, take and return
only bytes and frozen dataclasses, leave Pillow's globals (``Image.MAX_IMAGE_PIXELS``, warning
filters) alone, and Pillow releases the GIL while it decodes and encodes.

Files are identified by their content, never by name or declared type: magic bytes first, then
Pillow restricted to PNG, JPEG and WebP, so no other parser ever sees untrusted bytes. Decoding
needs about 4 bytes a pixel (268 MB at 8192×8192), so callers should bound how many run at once.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field
from typing import Literal

from PIL import ExifTags, Image, ImageFile, ImageOps, JpegImagePlugin

from bot.errors import UserError

log = logging.getLogger(__name__)

ImageFormat = Literal["png", "jpeg", "webp"]

MB = 1024 * 1024
# Square sizes dall-e-2 works in, largest first.
DALL_E_2_SIDES = (1024, 512, 256)
MASK_PROBLEM = "The mask must be a PNG with transparency where the image should change."

_PIL_NAMES: dict[ImageFormat, str] = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
_EXTENSIONS: dict[ImageFormat, str] = {"png": "png", "jpeg": "jpg", "webp": "webp"}
_SUBJECTS = {"image": "That image", "mask": "The mask"}
_SEND = "send a PNG, JPEG or WebP"
_QUALITIES = (90, 80, 70)
_SHRINK_STEP = 0.75
_SHRUNK_QUALITY = 80
_TINY = 16
_OPAQUE = (0, 0, 0, 255)
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})


class ImageProblem(UserError):
    """A file the bot can't use. ``str()`` is one sentence to show the person as it is."""


@dataclass(frozen=True)
class CheckedImage:
    """Image bytes known to decode, with what the API and Discord need to know about them."""

    data: bytes = field(repr=False)  # megabytes in a log line help no one
    format: ImageFormat
    width: int
    height: int
    has_alpha: bool  # an alpha channel or a transparent colour, used or not

    @property
    def content_type(self) -> str:
        return f"image/{self.format}"

    @property
    def filename(self) -> str:
        return f"image.{_EXTENSIONS[self.format]}"


def check_size(size: int, *, max_bytes: int, what: Literal["image", "mask"] = "image") -> None:
    """Refuse a file from its size alone, so a caller can skip downloading a 30 MB attachment."""
    if size > max_bytes:
        raise ImageProblem(
            f"{_SUBJECTS[what]} is {size / MB:.1f} MB; the limit is {_megabytes(max_bytes)} MB."
        )


def check_image(
    data: bytes, *, max_bytes: int, max_side: int = 8192, min_side: int = 16
) -> CheckedImage:
    """Accept a PNG, JPEG or WebP that decodes completely and fits the limits.

    A photo rotated by its EXIF orientation is re-encoded upright (a JPEG with its own
    quantisation tables, so at the same quality), because models may ignore EXIF and a mask is
    drawn over the picture as the person saw it. Otherwise `data` is returned unchanged.
    """
    checked, _ = _check(
        data, max_bytes=max_bytes, max_side=max_side, min_side=min_side, what="image"
    )
    return checked


def check_mask(mask: bytes, image: CheckedImage, *, max_bytes: int) -> CheckedImage:
    """Accept an edit mask for `image`: same size, with some transparency (where to edit).

    The API wants an RGBA PNG, so a WebP mask, or a PNG in another mode (grey with alpha, a
    palette with a transparent colour), is converted to one; an RGBA PNG is kept as it is.
    """
    if _sniff(mask) not in ("png", "webp"):
        raise ImageProblem(MASK_PROBLEM)
    checked, im = _check(mask, max_bytes=max_bytes, max_side=8192, min_side=1, what="mask")
    rgba = im.convert("RGBA")
    # No alpha, or alpha opaque everywhere, would mark nothing to change.
    if not checked.has_alpha or _min_alpha(rgba) == 255:
        raise ImageProblem(MASK_PROBLEM)
    if (checked.width, checked.height) != (image.width, image.height):
        raise ImageProblem(
            f"The mask must be the same size as the image ({image.width}×{image.height}), "
            f"but it is {checked.width}×{checked.height}."
        )
    if checked.format == "png" and im.mode == "RGBA":
        return checked
    log.debug("Converting a %s %s mask to an RGBA PNG", checked.format, im.mode)
    return _png_image(rgba)


def prepare_for_model(
    image: CheckedImage,
    mask: CheckedImage | None = None,
    *,
    square_png_max_bytes: int | None,
    max_bytes: int,
) -> tuple[CheckedImage, CheckedImage | None]:
    """Convert `image` (and `mask`, identically) into what a model's edit endpoint takes.

    With `square_png_max_bytes` (dall-e-2: one square RGBA PNG under 4 MB) the picture is padded
    to a square with transparency rather than cropped, so none of it is lost; the smallest of
    1024, 512 and 256 that holds it without shrinking is used (1024 at most), then smaller ones
    until both files fit. The mask's padding is opaque, so only what the person marked changes.
    Without a mask, one is made that lets the whole picture (not the padding) change.

    Otherwise the bytes are kept untouched when within `max_bytes`, else shrunk to fit (the mask
    is then resized to match). Returns the image and the mask (None if none was given).
    """
    if mask is not None and (mask.width, mask.height) != (image.width, image.height):
        raise ValueError("the mask must be checked against this image with check_mask first")
    if square_png_max_bytes is not None:
        return _square_pngs(image, mask, square_png_max_bytes)
    if len(image.data) <= max_bytes:
        return image, mask
    fitted = _shrink_to_fit(_decode(image, "That image"), max_bytes)
    if mask is not None:
        size = (fitted.width, fitted.height)
        mask = _png_image(_decode(mask, "The mask").convert("RGBA").resize(size, _LANCZOS))
    log.debug("Shrank an image for the model: %d -> %d bytes", len(image.data), len(fitted.data))
    return fitted, mask


def fit_for_upload(data: bytes, *, limit: int) -> tuple[bytes, ImageFormat]:
    """Return a generated image whose bytes are at most `limit`, e.g. Discord's upload limit.

    Unchanged if it already fits. Else re-encoded (JPEG when opaque, WebP when some pixel is
    transparent, at quality 90, 80 then 70), then scaled down by 0.75 steps at quality 80.
    Returns the bytes and their format, so the file gets the right name (``f"image.{format}"``).
    """
    fmt = _sniff(data)
    if fmt is None:
        raise ImageProblem("That image is damaged and can't be read.")
    if len(data) <= limit:
        return data, fmt
    im = _open(data, fmt, "That image")
    _load(im, "That image")
    fitted = _shrink_to_fit(im, limit)
    log.info(
        "Recompressed an image for upload: %d -> %d bytes, %s %dx%d",
        len(data),
        len(fitted.data),
        fitted.format,
        fitted.width,
        fitted.height,
    )
    return fitted.data, fitted.format


# --- checking ---------------------------------------------------------------------------------

_LANCZOS = Image.Resampling.LANCZOS


def _check(
    data: bytes, *, max_bytes: int, max_side: int, min_side: int, what: Literal["image", "mask"]
) -> tuple[CheckedImage, Image.Image]:
    """The checked image and its decoded pixels."""
    check_size(len(data), max_bytes=max_bytes, what=what)  # before any decoding
    subject = _SUBJECTS[what]
    fmt = _sniff(data)
    if fmt is None:
        other = _other_format(data)
        if other is not None:
            raise ImageProblem(f"{other} images can't be edited: {_SEND}.")
        raise ImageProblem(f"That file is not an image: {_SEND}.")

    # The header alone gives the size: refuse huge pictures before decoding a single pixel.
    im = _open(data, fmt, subject)
    width, height = im.size
    if max(width, height) > max_side:
        raise ImageProblem(
            f"{subject} is {width}×{height} pixels; the limit is {max_side} pixels a side."
        )
    if min(width, height) < min_side:
        raise ImageProblem(
            f"{subject} is {width}×{height} pixels; it must be at least {min_side} pixels a side."
        )
    # verify() checks the PNG chunk checksums but never decompresses the pixels, so a truncated
    # or corrupt pixel stream passes it: a full decode is what catches that.
    try:
        im.verify()
    except Exception as exc:
        raise _problem(exc, subject) from exc
    loaded = _open(data, fmt, subject)
    _load(loaded, subject)

    pixels: Image.Image = loaded
    orientation = _orientation(loaded)
    if orientation != 1:
        pixels = ImageOps.exif_transpose(loaded) or loaded
        data = _encode_upright(pixels, loaded, fmt)
        check_size(len(data), max_bytes=max_bytes, what=what)
        log.debug("Re-encoded a %s with EXIF orientation %d upright", fmt, orientation)
    return CheckedImage(data, fmt, pixels.width, pixels.height, _has_alpha(pixels)), pixels


def _sniff(data: bytes) -> ImageFormat | None:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def _other_format(data: bytes) -> str | None:
    """Name an image format we refuse, for a clearer sentence than "not an image"."""
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    # "BM" alone starts plenty of text; a BMP also has a known info-header size at byte 14.
    if data[:2] == b"BM" and int.from_bytes(data[14:18], "little") in {12, 40, 52, 56, 108, 124}:
        return "BMP"
    if data[4:8] == b"ftyp":  # ISO media: phones send HEIC, browsers save AVIF
        brand = data[8:12]
        if brand in (b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1"):
            return "HEIC"
        if brand in (b"avif", b"avis"):
            return "AVIF"
    return None


def _open(data: bytes, fmt: ImageFormat, subject: str) -> ImageFile.ImageFile:
    """Read the header only; Pillow decodes the pixels later, on load()."""
    try:
        return Image.open(io.BytesIO(data), formats=[_PIL_NAMES[fmt]])
    except Exception as exc:
        raise _problem(exc, subject) from exc


def _load(im: ImageFile.ImageFile, subject: str) -> None:
    try:
        im.load()
    except Exception as exc:
        raise _problem(exc, subject) from exc


def _decode(image: CheckedImage, subject: str) -> ImageFile.ImageFile:
    im = _open(image.data, image.format, subject)
    _load(im, subject)
    return im


def _problem(exc: Exception, subject: str) -> ImageProblem:
    # Parsers of untrusted bytes fail in many ways (OSError, SyntaxError, ValueError, struct
    # errors, ...); to the person they all mean the same thing.
    if isinstance(exc, Image.DecompressionBombError):
        return ImageProblem(f"{subject} has too many pixels to open.")
    log.debug("Could not decode an image: %r", exc)
    return ImageProblem(f"{subject} is damaged and can't be read.")


def _orientation(im: Image.Image) -> int:
    try:
        value = im.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:  # a broken EXIF block should not sink a picture that decodes fine
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _encode_upright(upright: Image.Image, original: Image.Image, fmt: ImageFormat) -> bytes:
    out = io.BytesIO()
    if isinstance(original, JpegImagePlugin.JpegImageFile):
        # The original's tables keep the quality (and the size) the photo was taken at.
        upright.save(
            out,
            "JPEG",
            qtables=original.quantization,
            subsampling=JpegImagePlugin.get_sampling(original),
        )
    elif fmt == "webp":
        upright.save(out, "WEBP", quality=90)
    else:
        upright.save(out, "PNG")
    return out.getvalue()


def _has_alpha(im: Image.Image) -> bool:
    return im.mode in _ALPHA_MODES or "transparency" in im.info


def _min_alpha(rgba: Image.Image) -> int:
    low, _high = rgba.getchannel("A").getextrema()
    assert isinstance(low, int)
    return low


# --- converting -------------------------------------------------------------------------------


def _encode(im: Image.Image, fmt: ImageFormat, quality: int | None = None) -> bytes:
    out = io.BytesIO()
    if quality is None:
        im.save(out, _PIL_NAMES[fmt])
    else:
        im.save(out, _PIL_NAMES[fmt], quality=quality)
    return out.getvalue()


def _png_image(rgba: Image.Image) -> CheckedImage:
    return CheckedImage(_encode(rgba, "png"), "png", rgba.width, rgba.height, True)


def _shrink_to_fit(im: Image.Image, limit: int) -> CheckedImage:
    # JPEG is far smaller for opaque pictures; WebP keeps transparency where there is some.
    # An alpha channel that is opaque everywhere counts as opaque.
    transparent = _has_alpha(im) and _min_alpha(im.convert("RGBA")) < 255
    fmt: ImageFormat = "webp" if transparent else "jpeg"
    source = im.convert("RGBA" if transparent else "RGB")
    for quality in _QUALITIES:
        data = _encode(source, fmt, quality)
        if len(data) <= limit:
            return CheckedImage(data, fmt, source.width, source.height, transparent)
    scale = 1.0
    while True:
        scale *= _SHRINK_STEP
        size = (max(1, int(source.width * scale)), max(1, int(source.height * scale)))
        if max(size) < _TINY:
            raise ImageProblem("That image is too large to send, even made smaller.")
        # Resize from the source each time so the blur of one step does not compound.
        small = source.resize(size, _LANCZOS)
        data = _encode(small, fmt, _SHRUNK_QUALITY)
        if len(data) <= limit:
            return CheckedImage(data, fmt, small.width, small.height, transparent)


def _square_pngs(
    image: CheckedImage, mask: CheckedImage | None, limit: int
) -> tuple[CheckedImage, CheckedImage | None]:
    picture = _decode(image, "That image").convert("RGBA")
    # Without a mask dall-e-2 would change only transparent pixels: for an opaque picture,
    # nothing but the padding. The whole picture may change unless the person marked a part.
    marks = (
        Image.new("RGBA", picture.size, (0, 0, 0, 0))
        if mask is None
        else _decode(mask, "The mask").convert("RGBA")
    )
    longest = max(image.width, image.height)
    start = next((side for side in reversed(DALL_E_2_SIDES) if side >= longest), DALL_E_2_SIDES[0])
    for side in (side for side in DALL_E_2_SIDES if side <= start):
        square = _png_image(_pad_to_square(picture, side, (0, 0, 0, 0)))
        # Opaque padding in the mask: the model may change only what the person marked.
        square_mask = _png_image(_pad_to_square(marks, side, _OPAQUE))
        largest = max(len(square.data), len(square_mask.data))
        if largest <= limit:
            return square, square_mask
        log.debug("A %d px square PNG is %d bytes, over %d: trying smaller", side, largest, limit)
    raise ImageProblem("That image can't be made small enough for this model.")


def _pad_to_square(rgba: Image.Image, side: int, fill: tuple[int, int, int, int]) -> Image.Image:
    """Scale `rgba` to fit a `side` square and centre it; the rest is `fill`."""
    scale = side / max(rgba.width, rgba.height)
    size = (max(1, round(rgba.width * scale)), max(1, round(rgba.height * scale)))
    content = rgba if size == rgba.size else rgba.resize(size, _LANCZOS)
    canvas = Image.new("RGBA", (side, side), fill)
    # No paste mask, so the picture's own alpha is copied rather than blended.
    canvas.paste(content, ((side - size[0]) // 2, (side - size[1]) // 2))
    return canvas


def _megabytes(size: int) -> str:
    return f"{size / MB:.1f}".removesuffix(".0")
