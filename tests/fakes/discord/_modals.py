"""Modals: the MODAL callback checked as Discord checks it, and the MODAL_SUBMIT data a person
sends back by filling it in.

A modal is ``{custom_id, title, components}`` with 1 to 5 top-level components, each either an
action row (type 1) holding exactly one text input (type 4, the older layout) or a label
(type 18) whose ``component`` is a text input. Discord numbers every component of the modal
(``id``): the bot's own ids are kept, the others are given 1, 2, 3... in order, skipping the
ids already taken; the submission carries those ids back.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from ._util import DiscordError, field_error, invalid_form

ACTION_ROW = 1
TEXT_INPUT = 4
LABEL = 18
TEXT_STYLES = (1, 2)  # short, paragraph

MODAL_CUSTOM_ID_MAX = 100
MODAL_TITLE_MAX = 45
MODAL_COMPONENTS_MAX = 5
LABEL_MAX = 45
DESCRIPTION_MAX = 100
PLACEHOLDER_MAX = 100
TEXT_MAX = 4000


def _bad(path: str, code: str, message: str) -> DiscordError:
    return invalid_form(field_error(path, code, message))


def _string(
    obj: Mapping[str, Any], key: str, where: str, *, low: int, high: int, required: bool
) -> str | None:
    """A string field of length ``low``..``high`` (``None`` counts as absent, as in
    Discord's JSON)."""
    value = obj.get(key)
    path = f"{where}.{key}"
    if value is None:
        if required:
            raise _bad(path, "BASE_TYPE_REQUIRED", "This field is required")
        return None
    if not isinstance(value, str):
        raise _bad(path, "BASE_TYPE_STRING", "Must be a string.")
    if low and not low <= len(value) <= high:
        raise _bad(path, "BASE_TYPE_BAD_LENGTH", f"Must be between {low} and {high} in length.")
    if len(value) > high:
        raise _bad(path, "BASE_TYPE_MAX_LENGTH", f"Must be {high} or fewer in length.")
    return value


def _integer(obj: Mapping[str, Any], key: str, where: str, *, low: int, high: int) -> int | None:
    value = obj.get(key)
    path = f"{where}.{key}"
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(path, "NUMBER_TYPE_COERCE", f'Value "{value}" is not int.')
    if value < low:
        raise _bad(path, "NUMBER_TYPE_MIN", f"int value should be greater than or equal to {low}.")
    if value > high:
        raise _bad(path, "NUMBER_TYPE_MAX", f"int value should be less than or equal to {high}.")
    return value


def _object(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _bad(path, "DICT_TYPE_CONVERT", "Must be an object.")
    return value


def _check_type(component: Mapping[str, Any], where: str, allowed: tuple[int, ...]) -> int:
    ctype = component.get("type")
    if ctype not in allowed:
        choices = ", ".join(str(a) for a in allowed)
        raise _bad(
            f"{where}.type",
            "UNION_TYPE_CHOICES",
            f'Value of field "type" must be one of ({choices}).',
        )
    return int(ctype)


def _check_text_input(component: Mapping[str, Any], where: str, *, in_label: bool) -> str:
    """Checks one text input; returns its custom id."""
    custom_id = _string(
        component, "custom_id", where, low=1, high=MODAL_CUSTOM_ID_MAX, required=True
    )
    style = component.get("style")
    if style not in TEXT_STYLES:
        raise _bad(f"{where}.style", "BASE_TYPE_CHOICES", "Value must be one of {1, 2}.")
    if in_label:
        # The label component carries the text; the input inside it has none.
        if component.get("label") is not None:
            raise _bad(
                f"{where}.label",
                "COMPONENT_INVALID_FIELD",
                "A text input inside a label cannot have a label",
            )
    else:
        _string(component, "label", where, low=1, high=LABEL_MAX, required=True)
    _integer(component, "min_length", where, low=0, high=TEXT_MAX)
    max_length = _integer(component, "max_length", where, low=1, high=TEXT_MAX)
    value = _string(component, "value", where, low=0, high=TEXT_MAX, required=False)
    if value is not None and max_length is not None and len(value) > max_length:
        raise _bad(
            f"{where}.value", "BASE_TYPE_MAX_LENGTH", f"Must be {max_length} or fewer in length."
        )
    _string(component, "placeholder", where, low=0, high=PLACEHOLDER_MAX, required=False)
    required = component.get("required")
    if required is not None and not isinstance(required, bool):
        raise _bad(f"{where}.required", "BASE_TYPE_BOOLEAN", "Must be either true or false.")
    assert custom_id is not None
    return custom_id


def validate_modal(data: Any, where: str = "data") -> dict[str, Any]:
    """The data of a MODAL callback (type 9), refused with 50035 as Discord refuses it."""
    modal = _object(data, where)
    _string(modal, "custom_id", where, low=1, high=MODAL_CUSTOM_ID_MAX, required=True)
    _string(modal, "title", where, low=1, high=MODAL_TITLE_MAX, required=True)
    components = modal.get("components")
    path = f"{where}.components"
    if components is None:
        raise _bad(path, "BASE_TYPE_REQUIRED", "This field is required")
    if not isinstance(components, list):
        raise _bad(path, "BASE_TYPE_ARRAY", "Must be an array.")
    if not components:
        raise _bad(path, "BASE_TYPE_MIN_LENGTH", "Must be 1 or more in length.")
    if len(components) > MODAL_COMPONENTS_MAX:
        raise _bad(
            path, "BASE_TYPE_MAX_LENGTH", f"Must be {MODAL_COMPONENTS_MAX} or fewer in length."
        )
    seen: set[str] = set()
    for i, top in enumerate(components):
        top_where = f"{path}.{i}"
        component = _object(top, top_where)
        if _check_type(component, top_where, (ACTION_ROW, LABEL)) == ACTION_ROW:
            children = component.get("components")
            rows_path = f"{top_where}.components"
            if not isinstance(children, list):
                raise _bad(rows_path, "BASE_TYPE_ARRAY", "Must be an array.")
            if len(children) != 1:
                code, text = (
                    ("BASE_TYPE_MIN_LENGTH", "Must be 1 or more in length.")
                    if not children
                    else ("BASE_TYPE_MAX_LENGTH", "Must be 1 or fewer in length.")
                )
                raise _bad(rows_path, code, text)
            inner_where = f"{rows_path}.0"
            inner = _object(children[0], inner_where)
            in_label = False
        else:
            _string(component, "label", top_where, low=1, high=LABEL_MAX, required=True)
            _string(
                component, "description", top_where, low=0, high=DESCRIPTION_MAX, required=False
            )
            inner_where = f"{top_where}.component"
            if component.get("component") is None:
                raise _bad(inner_where, "BASE_TYPE_REQUIRED", "This field is required")
            inner = _object(component["component"], inner_where)
            in_label = True
        _check_type(inner, inner_where, (TEXT_INPUT,))
        custom_id = _check_text_input(inner, inner_where, in_label=in_label)
        if custom_id in seen:
            raise _bad(
                f"{inner_where}.custom_id",
                "COMPONENT_CUSTOM_ID_DUPLICATED",
                "Component custom id cannot be duplicated",
            )
        seen.add(custom_id)
    return modal


# ---------------------------------------------------------------------------------------------
# Filling it in
# ---------------------------------------------------------------------------------------------


def text_inputs(modal: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """The modal's text inputs, in order."""
    for top in modal["components"]:
        if top["type"] == ACTION_ROW:
            yield top["components"][0]
        else:
            yield top["component"]


def typed_values(modal: Mapping[str, Any], values: Mapping[str, str]) -> dict[str, str]:
    """What a person submits: ``values`` by custom id, the prefilled ``value`` (or "") for
    inputs left out. Raises ValueError for what the Discord client would not let them send:
    an unknown input, a required input left empty, a text outside min/max length."""
    inputs = {str(i["custom_id"]): i for i in text_inputs(modal)}
    unknown = [key for key in values if key not in inputs]
    if unknown:
        raise ValueError(f"the modal has no text input {unknown}")
    typed: dict[str, str] = {}
    for custom_id, component in inputs.items():
        text = values.get(custom_id, component.get("value") or "")
        if not isinstance(text, str):
            raise TypeError(f"text for {custom_id!r} must be a str, not {text!r}")
        required = component.get("required")
        if text == "":
            if required is None or required:
                raise ValueError(f"text input {custom_id!r} is required")
        else:
            low = component.get("min_length") or 0
            high = component.get("max_length") or TEXT_MAX
            if not low <= len(text) <= high:
                raise ValueError(
                    f"text input {custom_id!r} takes {low} to {high} characters, not {len(text)}"
                )
        typed[custom_id] = text
    return typed


def submitted_components(
    modal: Mapping[str, Any], typed: Mapping[str, str]
) -> list[dict[str, Any]]:
    """``data.components`` of the MODAL_SUBMIT, shaped as Discord sends it: each layout
    component with its id, each text input with its id, custom id and value."""
    taken = {
        int(c["id"])
        for c in _all_components(modal)
        if isinstance(c.get("id"), int) and not isinstance(c.get("id"), bool)
    }
    counter = 0

    def next_id(component: Mapping[str, Any]) -> int:
        nonlocal counter
        own = component.get("id")
        if isinstance(own, int) and not isinstance(own, bool):
            return own
        counter += 1
        while counter in taken:
            counter += 1
        return counter

    def text_input(component: Mapping[str, Any], ident: int) -> dict[str, Any]:
        custom_id = str(component["custom_id"])
        return {
            "type": TEXT_INPUT,
            "id": ident,
            "custom_id": custom_id,
            "value": typed[custom_id],
        }

    out: list[dict[str, Any]] = []
    for top in modal["components"]:
        top_id = next_id(top)
        if top["type"] == ACTION_ROW:
            inner = top["components"][0]
            out.append(
                {
                    "type": ACTION_ROW,
                    "id": top_id,
                    "components": [text_input(inner, next_id(inner))],
                }
            )
        else:
            inner = top["component"]
            out.append(
                {"type": LABEL, "id": top_id, "component": text_input(inner, next_id(inner))}
            )
    return out


def _all_components(modal: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    for top in modal["components"]:
        yield top
        if top["type"] == ACTION_ROW:
            yield top["components"][0]
        else:
            yield top["component"]
