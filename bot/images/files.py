"""Checking and converting image files for /ask, /image and /edit: bytes in, bytes out.

Knows nothing of Discord or the API. Every public function is synchronous and CPU-bound (Pillow
decodes and encodes), so async code runs it in a worker thread (bot/images/work.py). That is safe
and worth it: the functions share no mutable state, take and return only bytes and frozen
dataclasses, leave Pillow's globals (``Image.MAX_IMAGE_PIXELS``, warning filters) alone, and
Pillow releases the GIL while it decodes and encodes.

Files are identified by their content, never by name or declared type: magic bytes first, then
Pillow restricted to PNG, JPEG and WebP, so no other parser ever sees untrusted bytes.

A decoded picture takes 4 bytes a pixel (256 MB at 8000×8000), so nothing is decoded larger
than its use needs: the header is read first and a picture with too many pixels is refused
before any decoding; a JPEG that will be shrunk is decoded at reduced size (``draft``); a
non-interlaced PNG is decoded a band of rows at a time, each band reduced as it comes
(`_png_reduced`); at most one full-size copy of a picture is held. Callers still bound how many
pixels are decoded at once, bot-wide (`bot.images.work.ImageWork`).
"""

from __future__ import annotations

import io
import logging
import math
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal

from PIL import ExifTags, Image, ImageFile, JpegImagePlugin, PngImagePlugin

from bot.errors import UserError

log = logging.getLogger(__name__)

ImageFormat = Literal["png", "jpeg", "webp"]

MB = 1024 * 1024
# Square sizes dall-e-2 works in, largest first.
DALL_E_2_SIDES = (1024, 512, 256)
# Vision models work at up to 2048 px a side (OpenAI scales larger pictures down): sending more
# only costs upload time.
VISION_SIDE = 2048
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
# Checking that every pixel decodes needs no more than this many on the longest side.
_CHECK_SIDE = 256
# What ImageOps.exif_transpose does for each EXIF orientation.
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


class ImageProblem(UserError):
    """A file the bot can't use. ``str()`` is one sentence to show the person as it is."""


@dataclass(frozen=True)
class CheckedImage:
    """Image bytes known to decode, with what the API and Discord need to know about them."""

    data: bytes = field(repr=False)  # megabytes in a log line help no one
    format: ImageFormat
    width: int  # as shown, that is after `orientation` is applied
    height: int
    has_alpha: bool  # an alpha channel or a transparent colour, used or not
    # The EXIF orientation the pixels still need to be shown upright (1: none). Models may
    # ignore EXIF, so a conversion applies it; bytes sent as they came keep it.
    orientation: int = 1

    @property
    def content_type(self) -> str:
        return f"image/{self.format}"

    @property
    def filename(self) -> str:
        return f"image.{_EXTENSIONS[self.format]}"

    @property
    def pixels(self) -> int:
        return self.width * self.height


def check_size(size: int, *, max_bytes: int, what: Literal["image", "mask"] = "image") -> None:
    """Refuse a file from its size alone, so a caller can skip downloading a 30 MB attachment."""
    if size > max_bytes:
        raise ImageProblem(
            f"{_SUBJECTS[what]} is {size / MB:.1f} MB; the limit is {_megabytes(max_bytes)} MB."
        )


def pixel_count(data: bytes) -> int:
    """What decoding `data` may cost, in pixels, from its header alone (0 when it is no image we
    read), known before deciding when to decode it. A WebP counts several times its pixels."""
    fmt = _sniff(data)
    if fmt is None:
        return 0
    try:
        width, height = _open(data, fmt, "That image").size
    except ImageProblem:
        return 0
    return width * height * (_WEBP_COST if fmt == "webp" else 1)


def check_image(
    data: bytes, *, max_bytes: int, max_pixels: int, min_side: int = 16
) -> CheckedImage:
    """Accept a PNG, JPEG or WebP that decodes completely and fits the limits; `data` is kept
    as it is.

    Every pixel is decoded, at reduced size where the format allows, so a truncated or corrupt
    file is caught here rather than by the model.
    """
    checked, _header = _check(
        data, max_bytes=max_bytes, max_pixels=max_pixels, min_side=min_side, what="image"
    )
    _pixels(checked, "That image", at_least=_CHECK_SIDE)
    return checked


def check_mask(
    mask: bytes, image: CheckedImage, *, max_bytes: int, max_pixels: int
) -> CheckedImage:
    """Accept an edit mask for `image`: same size, with some transparency (where to edit).

    The API wants an RGBA PNG, so a WebP mask, or a PNG in another mode (grey with alpha, a
    palette with a transparent colour), is converted to one; an RGBA PNG is kept as it is.
    """
    if _sniff(mask) not in ("png", "webp"):
        raise ImageProblem(MASK_PROBLEM)
    checked, header = _check(
        mask, max_bytes=max_bytes, max_pixels=max_pixels, min_side=1, what="mask"
    )
    if not checked.has_alpha:
        raise ImageProblem(MASK_PROBLEM)
    if (checked.width, checked.height) != (image.width, image.height):
        raise ImageProblem(
            f"The mask must be the same size as the image ({image.width}×{image.height}), "
            f"but it is {checked.width}×{checked.height}."
        )
    # Every pixel counts here (one transparent pixel marks a place to edit): full size.
    rgba = _pixels(checked, "The mask")
    if _min_alpha(rgba) == 255:  # alpha opaque everywhere marks nothing to change
        raise ImageProblem(MASK_PROBLEM)
    if checked.format == "png" and header.mode == "RGBA" and checked.orientation == 1:
        return checked
    log.debug("Converting a %s %s mask to an RGBA PNG", checked.format, header.mode)
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

    Otherwise the bytes are kept untouched when upright and within `max_bytes`, else made
    upright and shrunk to fit (the mask is then resized to match). Returns the image and the
    mask (None if none was given).
    """
    if mask is not None and (mask.width, mask.height) != (image.width, image.height):
        raise ValueError("the mask must be checked against this image with check_mask first")
    if square_png_max_bytes is not None:
        return _square_pngs(image, mask, square_png_max_bytes)
    if len(image.data) <= max_bytes and image.orientation == 1:
        return image, mask
    fitted = _upright_within(image, max_bytes)
    if mask is not None and (fitted.width, fitted.height) != (mask.width, mask.height):
        rgba = _pixels(mask, "The mask").resize((fitted.width, fitted.height), _LANCZOS)
        mask = _png_image(rgba)
    log.debug("Converted an image for the model: %d -> %d bytes", len(image.data), len(fitted.data))
    return fitted, mask


def prepare_for_vision(
    image: CheckedImage, *, max_bytes: int, max_side: int = VISION_SIDE
) -> CheckedImage:
    """`image` as a vision model should get it: as it came when upright and at most `max_side`
    pixels a side, else upright and scaled down to fit (a JPEG, or a WebP where some pixel is
    transparent)."""
    longest = max(image.width, image.height)
    if longest <= max_side and image.orientation == 1:
        return image
    pixels = _pixels(image, "That image", at_least=min(longest, max_side))
    pixels.thumbnail((max_side, max_side), _LANCZOS)
    shown = _shrink_to_fit(pixels, max_bytes)
    log.debug("Converted an image for a vision model: %dx%d", shown.width, shown.height)
    return shown


def fit_for_upload(data: bytes, *, limit: int, max_pixels: int) -> tuple[bytes, ImageFormat]:
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
    checked, _header = _check(
        data, max_bytes=len(data), max_pixels=max_pixels, min_side=1, what="image"
    )
    fitted = _shrink_to_fit(_pixels(checked, "That image"), limit)
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
# Pillow decodes a WebP whole, and holds about four full copies while it does (some 15 bytes a
# pixel, against 4 for a PNG or JPEG decoded as it goes): it counts five times its pixels.
_WEBP_COST = 5


def _check(
    data: bytes, *, max_bytes: int, max_pixels: int, min_side: int, what: Literal["image", "mask"]
) -> tuple[CheckedImage, ImageFile.ImageFile]:
    """What the header says, checked against the limits before any pixel is decoded; with the
    opened (not decoded) image."""
    check_size(len(data), max_bytes=max_bytes, what=what)
    subject = _SUBJECTS[what]
    fmt = _sniff(data)
    if fmt is None:
        other = _other_format(data)
        if other is not None:
            raise ImageProblem(f"{other} images aren't supported: {_SEND}.")
        raise ImageProblem(f"That file is not an image: {_SEND}.")

    header = _open(data, fmt, subject)
    width, height = header.size
    if width * height > max_pixels:
        raise ImageProblem(
            f"{subject} is {width}×{height} pixels ({_megapixels(width * height)} MP); "
            f"the limit is {_megapixels(max_pixels)} MP."
        )
    if fmt == "webp" and width * height * _WEBP_COST > max_pixels:
        raise ImageProblem(
            f"{subject} is a WebP of {_megapixels(width * height)} MP; WebP images can have up "
            f"to {_megapixels(max_pixels // _WEBP_COST)} MP: send a PNG or JPEG, or a smaller one."
        )
    if min(width, height) < min_side:
        raise ImageProblem(
            f"{subject} is {width}×{height} pixels; it must be at least {min_side} pixels a side."
        )
    orientation = _orientation(header)
    if orientation >= 5:  # turned by a quarter: shown with width and height swapped
        width, height = height, width
    return CheckedImage(data, fmt, width, height, _has_alpha(header), orientation), header


def _sniff(data: bytes) -> ImageFormat | None:
    if data.startswith(_PNG_SIGNATURE):
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
        return _reader(data, fmt)
    except Exception as exc:
        raise _problem(exc, subject) from exc


def _reader(data: bytes, fmt: ImageFormat) -> ImageFile.ImageFile:
    return Image.open(io.BytesIO(data), formats=[_PIL_NAMES[fmt]])


def _problem(exc: Exception, subject: str) -> ImageProblem:
    # Parsers of untrusted bytes fail in many ways (OSError, SyntaxError, ValueError, struct
    # errors, zlib errors, ...); to the person they all mean the same thing.
    if isinstance(exc, ImageProblem):
        return exc
    if isinstance(exc, Image.DecompressionBombError):
        return ImageProblem(f"{subject} has too many pixels to open.")
    log.debug("Could not decode an image: %r", exc)
    return ImageProblem(f"{subject} is damaged and can't be read.")


def _orientation(im: Image.Image) -> int:
    if isinstance(im, PngImagePlugin.PngImageFile) and "exif" not in im.info:
        return 1  # Pillow would decode every pixel to look for an eXIf chunk after them
    try:
        value = im.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:  # a broken EXIF block should not sink a picture that decodes fine
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _has_alpha(im: Image.Image) -> bool:
    return im.mode in _ALPHA_MODES or "transparency" in im.info


def _min_alpha(rgba: Image.Image) -> int:
    low, _high = rgba.getchannel("A").getextrema()
    assert isinstance(low, int)
    return low


# --- decoding ---------------------------------------------------------------------------------


def _pixels(image: CheckedImage, subject: str, *, at_least: int | None = None) -> Image.Image:
    """The picture decoded upright, in RGB (RGBA with alpha), at full size or, with `at_least`,
    reduced by a whole factor to no fewer pixels than that on its longest side. Decoding
    reduces as it goes wherever the format allows, so no full-size copy is made for a smaller
    result.
    """
    try:
        header = _open(image.data, image.format, subject)
        mode = "RGBA" if image.has_alpha else "RGB"
        factor = 1 if at_least is None else max(1, max(header.size) // max(1, at_least))
        decoded = None
        if image.format == "png":
            decoded = _png_reduced(image.data, header, mode, factor)
        if decoded is None:
            decoded = _decoded_whole(image.data, image.format, mode, factor)
    except Exception as exc:
        raise _problem(exc, subject) from exc
    transpose = _UPRIGHT.get(image.orientation)
    return decoded if transpose is None else decoded.transpose(transpose)


def _decoded_whole(data: bytes, fmt: ImageFormat, mode: str, factor: int) -> Image.Image:
    """What `_png_reduced` does not handle, decoded whole; a JPEG at reduced size."""
    if fmt == "png":
        # verify() checks the chunk checksums, which load() skips; it needs an image of its own.
        _reader(data, fmt).verify()
    im: Image.Image = _reader(data, fmt)
    if fmt == "jpeg" and factor > 1:
        # The decoder scales by 1/2, 1/4 or 1/8 as it goes, keeping at least the size asked for.
        im.draft("RGB", (im.width // factor, im.height // factor))
        factor = 1
    im.load()
    if im.mode != mode:
        im = im.convert(mode)
    return im.reduce(factor) if factor > 1 else im


# --- PNG, a band at a time ----------------------------------------------------------------------

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_BAND_ROWS = 256
_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # by colour type
# PNG filters work on whole pixels of 1 to 4 bytes; a band is first decoded as the 8-bit type
# whose pixels are that many bytes (grey, grey and alpha, RGB, RGBA), which gives its bytes
# unfiltered and otherwise as they are.
_SAME_BYTES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}


def _png_formats() -> dict[tuple[int, int], tuple[str, str]]:
    """Pillow's own table of PNG pixel formats (private): should a release move it, PNGs are
    decoded whole instead, under the same pixel budget."""
    formats: dict[tuple[int, int], tuple[str, str]] = getattr(PngImagePlugin, "_MODES", {})
    return formats


def _png_reduced(
    data: bytes, header: ImageFile.ImageFile, mode: str, factor: int
) -> Image.Image | None:
    """A non-interlaced PNG decoded a band of rows at a time, each band reduced by `factor` as
    soon as it is decoded: memory for one band and the result, never the whole picture.

    Pillow does the work: the zlib stream is inflated one band at a time, the band decoded as
    a PNG stream of its own (its first row the previous band's last row, unfiltered, so the
    filters referring to the row above still find it), then unpacked as the real pixel format.
    Bands are a whole number of `factor` rows high, so reducing them leaves no seams.
    None for what it does not handle (interlaced, 16 bits a channel in colour).
    """
    chunks = list(_png_chunks(data))
    if not chunks or chunks[0][0] != b"IHDR":
        raise ValueError("a PNG starts with its IHDR chunk")
    width, height, depth, colour, _compression, _filter, interlace = struct.unpack(
        ">IIBBBBB", chunks[0][1]
    )
    bits = depth * _CHANNELS[colour]
    pixel_bytes = max(1, bits // 8)
    if interlace or pixel_bytes not in _SAME_BYTES:
        return None
    row_bytes = (width * bits + 7) // 8
    same_bytes_mode = _SAME_BYTES[pixel_bytes]
    modes = _png_formats()
    if (depth, colour) not in modes:
        return None
    real_mode, rawmode = modes[(depth, colour)]
    inflated = _inflated(body for kind, body in chunks if kind == b"IDAT")

    result = Image.new(mode, (math.ceil(width / factor), math.ceil(height / factor)))
    band_rows = factor * max(1, _BAND_ROWS // factor)
    above = b""  # the unfiltered row above the band, sent again with filter type 0 (none)
    for top in range(0, height, band_rows):
        rows = min(band_rows, height - top)
        stream = (b"\x00" + above if above else b"") + inflated(rows * (1 + row_bytes))
        sent_rows = rows + (1 if above else 0)
        unfiltered = Image.frombytes(
            same_bytes_mode,
            (row_bytes // pixel_bytes, sent_rows),
            zlib.compress(stream, 0),
            "zip",
            same_bytes_mode,
        ).tobytes()[len(above) :]
        above = unfiltered[-row_bytes:]
        band = Image.frombytes(real_mode, (width, rows), unfiltered, "raw", rawmode)
        if header.palette is not None and real_mode == "P":
            band.putpalette(header.palette)
        if "transparency" in header.info:
            band.info["transparency"] = header.info["transparency"]
        if band.mode != mode:
            band = band.convert(mode)
        result.paste(band.reduce(factor) if factor > 1 else band, (0, top // factor))
    return result


def _png_chunks(data: bytes) -> Iterator[tuple[bytes, memoryview]]:
    """The chunks of a PNG up to IEND, their checksums checked."""
    view = memoryview(data)
    position = len(_PNG_SIGNATURE)
    while True:
        if position + 12 > len(data):
            raise ValueError("the PNG ends before its IEND chunk")
        length, kind = struct.unpack_from(">I4s", data, position)
        end = position + 8 + length
        if end + 4 > len(data):
            raise ValueError("the PNG ends inside a chunk")
        body = view[position + 8 : end]
        if zlib.crc32(body, zlib.crc32(kind)) != struct.unpack_from(">I", data, end)[0]:
            raise ValueError(f"the {kind!r} chunk is damaged")
        if kind == b"IEND":
            return
        yield kind, body
        position = end + 4


def _inflated(bodies: Iterator[memoryview]) -> Callable[[int], bytes]:
    """A reader of the zlib stream split over `bodies`, so many bytes at a time."""
    inflater = zlib.decompressobj()

    def read(size: int) -> bytes:
        out = bytearray()
        while len(out) < size:
            source = inflater.unconsumed_tail or next(bodies, None)
            if source is None or inflater.eof:
                raise ValueError("the pixel data ends early")
            out += inflater.decompress(source, size - len(out))
        return bytes(out)

    return read


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


def _upright_within(image: CheckedImage, max_bytes: int) -> CheckedImage:
    """`image` upright at full size in its own format if that fits `max_bytes`, else shrunk."""
    pixels = _pixels(image, "That image")
    if image.orientation != 1:
        data = _encode_upright(pixels, image)
        if len(data) <= max_bytes:
            return CheckedImage(data, image.format, pixels.width, pixels.height, image.has_alpha)
    return _shrink_to_fit(pixels, max_bytes)


def _encode_upright(upright: Image.Image, image: CheckedImage) -> bytes:
    original = _open(image.data, image.format, "That image")
    out = io.BytesIO()
    if isinstance(original, JpegImagePlugin.JpegImageFile):
        # The original's tables keep the quality (and the size) the photo was taken at.
        upright.save(
            out,
            "JPEG",
            qtables=original.quantization,
            subsampling=JpegImagePlugin.get_sampling(original),
        )
    elif image.format == "webp":
        upright.save(out, "WEBP", quality=90)
    else:
        upright.save(out, "PNG")
    return out.getvalue()


def _shrink_to_fit(im: Image.Image, limit: int) -> CheckedImage:
    """`im` (RGB or RGBA) encoded within `limit` bytes: JPEG, far smaller for opaque pictures,
    or WebP where some pixel is transparent (an alpha channel opaque everywhere counts as
    opaque); smaller steps of quality, then of size."""
    transparent = im.mode == "RGBA" and _min_alpha(im) < 255
    fmt: ImageFormat = "webp" if transparent else "jpeg"
    source = im if im.mode == ("RGBA" if transparent else "RGB") else im.convert("RGB")
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
    longest = max(image.width, image.height)
    start = next((side for side in reversed(DALL_E_2_SIDES) if side >= longest), DALL_E_2_SIDES[0])
    # Decoded no larger than the largest square needs.
    picture = _pixels(image, "That image", at_least=start).convert("RGBA")
    # Without a mask dall-e-2 would change only transparent pixels: for an opaque picture,
    # nothing but the padding. The whole picture may change unless the person marked a part.
    marks = (
        Image.new("RGBA", picture.size, (0, 0, 0, 0))
        if mask is None
        else _pixels(mask, "The mask", at_least=start).convert("RGBA")
    )
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


def _megapixels(pixels: int) -> str:
    return f"{pixels / 1_000_000:.1f}".removesuffix(".0")
