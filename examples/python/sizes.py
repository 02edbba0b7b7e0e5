"""Says how big a file is, with the digits grouped the way people read them."""

import humanize


def describe(name: str, size: int) -> str:
    return f"{name}: {humanize.intcomma(size)} bytes"
