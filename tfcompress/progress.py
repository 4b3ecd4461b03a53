"""Progress bars with an ETA for the long loops that are not ``fit``: LiteRT evaluation, latency measurements and
table builds, NetAdapt iterations and candidates, decomposition searches, the demo's stages.

    from tfcompress import progress
    with progress.bar(len(batches), "LiteRT evaluation", unit="batch") as bar:
        for batch in batches:
            ...
            bar.update(1)
    for layer in progress.iterate(layers, "decomposition"):
        ...

A bar is drawn (tqdm, on stderr) only where someone watches: when stderr is a terminal and the environment
variable ``CI`` is not set. ``TFC_PROGRESS=1`` forces bars on (into a log file, say), ``TFC_PROGRESS=0`` off. A
caller's ``enable=False`` (the ``progress=False`` argument of the functions that take one) turns a bar off
whatever the environment says. A disabled bar costs nothing and prints nothing, so results never depend on it.

Lines printed while bars are drawn tear them; :func:`around_bars` wraps a line callback (``print``, a logger)
so that the bars are cleared before it prints and redrawn after.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any, TypeVar

ENV_VAR = "TFC_PROGRESS"
_ON = ("1", "true", "yes", "on")
_OFF = ("0", "false", "no", "off")

T = TypeVar("T")


def enabled(enable: bool = True, file: IO[str] | None = None) -> bool:
    """Whether a bar is drawn into ``file`` (default: stderr): never with ``enable=False``; else as
    ``TFC_PROGRESS`` says (1 on, 0 off); else not under CI (``CI`` set); else when ``file`` is a terminal.

    Raises:
        ValueError: ``TFC_PROGRESS`` holds something else than 1/0 (true/false, yes/no, on/off).
    """
    if not enable:
        return False
    setting = os.environ.get(ENV_VAR, "").strip().lower()
    if setting in _ON:
        return True
    if setting in _OFF:
        return False
    if setting:
        raise ValueError(f"{ENV_VAR} must be 1 (bars on) or 0 (off), got {os.environ[ENV_VAR]!r}")
    if os.environ.get("CI"):  # CI logs are read afterwards: a redrawn bar is only noise there
        return False
    stream = sys.stderr if file is None else file
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class Bar:
    """A tqdm bar, or nothing when disabled; use it as a context manager (see :func:`bar`).

    Attributes:
        n: the count so far (counted even when no bar is drawn).
        shown: whether a bar is drawn.
    """

    def __init__(self, total: float | None, desc: str, *, unit: str = "it", enable: bool = True,
                 file: IO[str] | None = None, leave: bool | None = None, initial: float = 0) -> None:
        self.total, self.desc, self.n = total, desc, initial
        self.shown = enabled(enable, file) and total != 0  # nothing to do: no bar (a resumed, finished build)
        self._tqdm = None
        if self.shown:
            from tqdm import tqdm  # here: a disabled bar does not import tqdm

            # leave=None: a top-level bar stays when done, a nested one (drawn below another) disappears
            self._tqdm = tqdm(total=total, desc=desc, unit=unit, initial=initial, leave=leave,
                              file=sys.stderr if file is None else file, dynamic_ncols=True)

    def update(self, count: float = 1) -> None:
        """Adds ``count`` done."""
        self.n += count
        if self._tqdm is not None:
            self._tqdm.update(count)

    def set_total(self, total: float | None) -> None:
        """Corrects the total once it is known (e.g. after a first batch)."""
        self.total = total
        if self._tqdm is not None:
            self._tqdm.total = total
            self._tqdm.refresh()

    def note(self, text: str) -> None:
        """Shows ``text`` after the counts (e.g. the current layer or the latency reached)."""
        if self._tqdm is not None:
            self._tqdm.set_postfix_str(text)

    def close(self) -> None:
        if self._tqdm is not None:
            self._tqdm.close()
            self._tqdm = None

    def __enter__(self) -> Bar:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def bar(total: float | None, desc: str, *, unit: str = "it", enable: bool = True, file: IO[str] | None = None,
        leave: bool | None = None, initial: float = 0) -> Bar:
    """A progress bar of ``total`` steps (None: unknown, no ETA) labelled ``desc``; ``bar.update(n)`` counts.

    Args:
        unit: what is counted ("batch", "model", "µs").
        enable: False: no bar, whatever the environment (see :func:`enabled`).
        file: where the bar is drawn (default: stderr at the time of the call).
        leave: keep the finished bar on screen (None: only when it is not nested in another bar).
        initial: steps already done (a resumed loop).
    """
    return Bar(total, desc, unit=unit, enable=enable, file=file, leave=leave, initial=initial)


def iterate(iterable: Iterable[T], desc: str, total: float | None = None, *, unit: str = "it", enable: bool = True,
            file: IO[str] | None = None, leave: bool | None = None) -> Iterator[T]:
    """The items of ``iterable``, one step of a bar each; ``total`` defaults to ``len(iterable)`` when it has one."""
    if total is None:
        try:
            total = len(iterable)  # type: ignore[arg-type]
        except TypeError:
            total = None
    with bar(total, desc, unit=unit, enable=enable, file=file, leave=leave) as progress_bar:
        for item in iterable:
            yield item
            progress_bar.update(1)


def around_bars(callback: Callable[[str], Any] | None) -> Callable[[str], None]:
    """``callback`` (a line printer such as ``print``; None: drop lines) made to clear the drawn bars before it
    prints and redraw them after, so lines and bars do not tear each other."""
    if callback is None:
        return lambda line: None

    def say(line: str) -> None:
        if "tqdm" not in sys.modules:  # no bar was ever drawn
            callback(line)
            return
        from tqdm import tqdm

        with tqdm.external_write_mode(file=sys.stdout):  # clears the bars of stdout and stderr
            callback(line)

    return say
