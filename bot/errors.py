"""Errors every service shares."""


class UserError(Exception):
    """Something the person can fix; `str()` is one sentence for them."""
