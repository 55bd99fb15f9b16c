"""How long work reports progress: the library calls these, the CLI draws them."""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def start(self, label: str, total: int | None) -> None: ...

    def advance(self, label: str, n: int = 1) -> None: ...

    def finish(self, label: str) -> None: ...


class NullProgress:
    """Progress that shows nothing (library calls and tests)."""

    def start(self, label: str, total: int | None) -> None:
        pass

    def advance(self, label: str, n: int = 1) -> None:
        pass

    def finish(self, label: str) -> None:
        pass


class Labelled:
    """Another step's progress under the same display, its labels prefixed (`export public.readings`)."""

    def __init__(self, inner: Progress, prefix: str) -> None:
        self.inner, self.prefix = inner, prefix

    def start(self, label: str, total: int | None) -> None:
        self.inner.start(self.prefix + label, total)

    def advance(self, label: str, n: int = 1) -> None:
        self.inner.advance(self.prefix + label, n)

    def finish(self, label: str) -> None:
        self.inner.finish(self.prefix + label)
