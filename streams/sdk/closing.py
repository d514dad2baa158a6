"""``with thing:`` for the SDK's objects that hold a thread or a process until closed."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class ClosedOnExit:
    """A context manager whose block's end calls :meth:`close`, also when the block raises."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
