"""What each image model takes: sizes, qualities, images per request, and how it edits."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ImageModel:
    name: str
    sizes: tuple[str, ...]
    qualities: tuple[str, ...] = ()
    # Images one request can return; more are made with several requests.
    per_request: int = 1
    max_prompt_chars: int = 4000
    edits: bool = True
    # dall-e-2 edits only one square RGBA PNG under 4 MB.
    edit_square_png_bytes: int | None = None
    # gpt-image models refuse `response_format` and always answer in base64.
    response_format: bool = True


_GPT_IMAGE = {
    "sizes": ("auto", "1024x1024", "1536x1024", "1024x1536"),
    "qualities": ("auto", "high", "medium", "low"),
    "per_request": 10,
    "max_prompt_chars": 32000,
    "response_format": False,
}

_KNOWN = {
    model.name: model
    for model in (
        ImageModel(
            "dall-e-2",
            sizes=("256x256", "512x512", "1024x1024"),
            per_request=10,
            max_prompt_chars=1000,
            edit_square_png_bytes=4 * 1024 * 1024,
        ),
        ImageModel(
            "dall-e-3",
            sizes=("1024x1024", "1792x1024", "1024x1792"),
            qualities=("standard", "hd"),
            edits=False,
        ),
        ImageModel("gpt-image-1", **_GPT_IMAGE),  # type: ignore[arg-type]
        ImageModel("gpt-image-1.5", **_GPT_IMAGE),  # type: ignore[arg-type]
        ImageModel("gpt-image-2", **_GPT_IMAGE),  # type: ignore[arg-type]
    )
}
# Models this table does not know (nano-banana and newer ones) get the common denominator.
_DEFAULT = ImageModel("", sizes=("auto", "1024x1024"), response_format=False)


def image_model(name: str) -> ImageModel:
    known = _KNOWN.get(name)
    if known is not None:
        return known
    return ImageModel(
        name,
        sizes=_DEFAULT.sizes,
        qualities=_DEFAULT.qualities,
        per_request=_DEFAULT.per_request,
        response_format=_DEFAULT.response_format,
    )
