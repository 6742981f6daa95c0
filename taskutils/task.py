"""Task: a function reference, its arguments and its retry policy, and their msgpack encoding."""

from __future__ import annotations

import importlib
import math
import sys
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, NamedTuple

import msgpack

from .errors import InvalidTask, PayloadError
from .limits import check_key

PRIORITY_LIMIT = 2**31
MAX_DELAY = 366 * 24 * 3600.0  # the longest delay or retry delay accepted, in seconds: a year
MAX_REPEATS = 1000  # the most retries a task may ask for
MAX_UNIQUE = 4096  # characters of a unique value (a URL fits)


def function_ref(func: Callable[..., Any] | str) -> str:
    """The 'module:qualname' a worker imports `func` by; InvalidTask if it has none."""
    if isinstance(func, str):
        module, sep, qualname = func.partition(":")
        if not (module and sep and qualname) or "<" in func:
            raise InvalidTask(f"function reference {func!r} must look like 'package.module:function'")
        return func
    module = getattr(func, "__module__", None)
    qualname = getattr(func, "__qualname__", None)
    if not callable(func) or not module or not qualname:
        raise InvalidTask(f"{func!r} is not a function a worker can import by name")
    if "<lambda>" in qualname or "<locals>" in qualname:
        raise InvalidTask(
            f"{module}:{qualname} is a lambda or nested function, which a worker cannot import; "
            "define it at module level"
        )
    loaded = sys.modules.get(module)
    if loaded is not None and _lookup(loaded, qualname) is not func:
        raise InvalidTask(
            f"{module}:{qualname} does not name {func!r} (decorated without functools.wraps?); "
            "a worker importing that name would run something else"
        )
    return f"{module}:{qualname}"


def resolve(ref: str, allowed: Callable[[str], bool]) -> Callable[..., Any]:
    """Import the function named by `ref`, refusing modules `allowed` rejects."""
    module_name, _, qualname = ref.partition(":")
    if not allowed(module_name):
        raise PermissionError(f"function {ref} is not allowed: its module is not among the worker's allowed modules")
    try:
        module = importlib.import_module(module_name)
    except BaseException as exc:  # SystemExit too: a module that exits when imported
        raise ImportError(f"cannot import module {module_name!r} for task function {ref}: {exc!r}") from exc
    func = _lookup(module, qualname)
    if func is None and module_name == "__main__":
        raise ImportError(
            f"{ref} was defined in the producer's script, which this process cannot import; "
            "move it to a module and start the worker with --import MODULE"
        )
    if func is None or not callable(func):
        raise ImportError(f"module {module_name!r} has no function {qualname!r} (task function {ref})")
    defined_in = getattr(func, "__module__", None) or ""
    if defined_in != module_name and not allowed(defined_in):
        raise PermissionError(f"function {ref} is not allowed: it is defined in {defined_in!r}")
    return func


def module_allowed(module: str, allowed: Iterable[str]) -> bool:
    """True if `module` is one of `allowed` or a submodule of one."""
    return any(module == name or module.startswith(name + ".") for name in allowed)


def allow_all(module: str) -> bool:
    """The embedded backend's policy: only this process can enqueue, so anything importable runs."""
    return True


def _lookup(module: Any, qualname: str) -> Any:
    target = module
    for part in qualname.split("."):
        target = getattr(target, part, None)
        if target is None:
            return None
    return target


@dataclass(frozen=True)
class Task:
    """A function call to run later: `func(*args, **kwargs)` under a priority and retry policy;
    `key` puts it in that key's lane (limits and fair turns: see Limit); `unique` enqueues it
    only if no task holding that value is pending (or ended less than `unique_for` seconds ago)."""

    func: Callable[..., Any] | str
    args: Iterable[Any] = ()
    kwargs: Mapping[str, Any] | None = None
    priority: int = 0
    repeats_on_failure: int = 0
    delay: float | None = field(default=None, kw_only=True)
    retry_delay: float = field(default=0.0, kw_only=True)
    retry_backoff: float = field(default=1.0, kw_only=True)
    queue: str | None = field(default=None, kw_only=True)
    key: str | None = field(default=None, kw_only=True)
    unique: str | None = field(default=None, kw_only=True)
    unique_for: float = field(default=0.0, kw_only=True)
    ref: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "args", tuple(self.args))
        object.__setattr__(self, "kwargs", dict(self.kwargs or {}))
        object.__setattr__(self, "ref", function_ref(self.func))
        if not isinstance(self.priority, int) or isinstance(self.priority, bool) or abs(self.priority) >= PRIORITY_LIMIT:
            raise InvalidTask(f"priority must be an int between -2**31 and 2**31, got {self.priority!r}")
        if not isinstance(self.repeats_on_failure, int) or not 0 <= self.repeats_on_failure <= MAX_REPEATS:
            raise InvalidTask(f"repeats_on_failure must be an int from 0 to {MAX_REPEATS}, got {self.repeats_on_failure!r}")
        if self.delay is not None:
            object.__setattr__(self, "delay", seconds("delay", self.delay))
        object.__setattr__(self, "retry_delay", seconds("retry_delay", self.retry_delay))
        if not _is_number(self.retry_backoff) or not 1 <= self.retry_backoff < math.inf:
            raise InvalidTask(f"retry_backoff must be a finite number >= 1, got {self.retry_backoff!r}")
        object.__setattr__(self, "retry_backoff", float(self.retry_backoff))
        if self.repeats_on_failure and self.retry_delay:
            try:
                longest = self.retry_delay * self.retry_backoff ** (self.repeats_on_failure - 1)
            except OverflowError:
                longest = math.inf
            if longest > MAX_DELAY:
                raise InvalidTask(
                    f"retry_delay={self.retry_delay:g} with retry_backoff={self.retry_backoff:g} waits "
                    f"{'too long' if longest == math.inf else f'{longest:.3g}s'} before retry {self.repeats_on_failure}: "
                    f"the longest retry delay is {MAX_DELAY:.0f}s (a year); use fewer repeats or a smaller backoff"
                )
        if self.queue is not None and (not isinstance(self.queue, str) or not self.queue):
            raise InvalidTask(f"queue must be a non-empty string or None (the handler's queue), got {self.queue!r}")
        if not all(isinstance(key, str) for key in self.kwargs):
            raise InvalidTask("kwargs keys must be strings")
        if self.key is not None:
            check_key(self.key)
        if self.unique is not None and (not isinstance(self.unique, str) or not 0 < len(self.unique) <= MAX_UNIQUE):
            raise InvalidTask(f"unique must be a string of 1 to {MAX_UNIQUE} characters or None, got {self.unique!r:.80}")
        object.__setattr__(self, "unique_for", seconds("unique_for", self.unique_for))
        if self.unique_for and self.unique is None:
            raise InvalidTask("unique_for needs a unique value: Task(..., unique=..., unique_for=seconds)")

    def encode(self, enqueued_at: float | None = None) -> bytes:
        """The msgpack body a worker decodes; PayloadError names the argument msgpack cannot carry.

        The body is [ref, args, kwargs, repeats_on_failure, retry_delay, retry_backoff,
        enqueued_at], without the trailing fields that hold their defaults (0, 0, 1, None), and
        with whole seconds as ints: every queued byte costs Redis memory. `enqueued_at` (epoch
        seconds, the producer's clock) gives the metrics their queue wait; a recurrent schedule's
        body has none."""
        spec = [self.ref, list(self.args), self.kwargs, self.repeats_on_failure, _compact(self.retry_delay),
                _compact(self.retry_backoff), enqueued_at]
        while len(spec) > 3 and spec[-1] == BODY_DEFAULTS[len(spec) - 1]:
            spec.pop()
        try:
            return pack_checked(spec)
        except (TypeError, ValueError, OverflowError, RecursionError):
            raise PayloadError(self._unencodable() + "; use None, bool, int, float, str, bytes, list, tuple or dict") from None

    def _unencodable(self) -> str:
        for index, value in enumerate(self.args):
            if not _packs(value):
                return f"argument {index} ({type(value).__name__}: {_preview(value)}) of {self.ref} cannot be encoded with msgpack"
        for name, value in self.kwargs.items():
            if not _packs(value):
                return f"argument {name!r} ({type(value).__name__}: {_preview(value)}) of {self.ref} cannot be encoded with msgpack"
        return f"the arguments of {self.ref} cannot be encoded with msgpack"


class TaskBody(NamedTuple):
    """A task as a worker sees it after decoding."""

    ref: str
    args: list[Any]
    kwargs: dict[str, Any]
    repeats_on_failure: int
    retry_delay: float
    retry_backoff: float
    enqueued_at: float | None = None

    @classmethod
    def decode(cls, body: bytes) -> "TaskBody":
        """Decode a body; ValueError says what is malformed."""
        try:
            spec = unpack(body)
        except Exception as exc:
            raise ValueError(f"task payload is not valid msgpack: {exc}") from None
        if not (isinstance(spec, list) and 3 <= len(spec) <= 7):
            raise ValueError("task payload is not a list of 3 to 7 fields")
        ref, args, kwargs, repeats, delay, backoff, enqueued = spec + BODY_DEFAULTS[len(spec):]
        if not (isinstance(ref, str) and isinstance(args, list) and isinstance(kwargs, dict)):
            raise ValueError("task payload has a wrong type for its function, args or kwargs")
        if not (isinstance(repeats, int) and isinstance(delay, (int, float)) and isinstance(backoff, (int, float))):
            raise ValueError("task payload has a wrong type for its retry policy")
        if not (enqueued is None or (isinstance(enqueued, (int, float)) and math.isfinite(enqueued))):
            enqueued = None  # only the metrics read it: a damaged one is not worth failing the task
        return cls(ref, args, kwargs, repeats, float(delay), float(backoff), enqueued)

    def retry_delay_after(self, failures: int) -> float:
        """Seconds to wait before the retry that follows the given number of failures; ValueError
        if that is not a finite number of seconds up to MAX_DELAY (a body not made by Task)."""
        delay = self.retry_delay * self.retry_backoff ** max(failures - 1, 0)
        if not 0 <= delay <= MAX_DELAY:
            raise ValueError(f"a retry delay of {delay!r} seconds is not between 0 and {MAX_DELAY:.0f}")
        return delay


BODY_DEFAULTS: list[Any] = [None, None, None, 0, 0, 1, None]


def _compact(seconds: float) -> float | int:
    """An integral float as an int (1 byte of msgpack instead of 9)."""
    return int(seconds) if float(seconds).is_integer() and abs(seconds) < 2**53 else seconds


def _preview(value: Any) -> str:
    """The start of repr(value), for an error message."""
    try:
        return f"{value!r:.60}"
    except RecursionError:
        return "nested too deep"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def seconds(name: str, value: Any) -> float:
    """A delay in seconds, checked: a finite number from 0 to MAX_DELAY; InvalidTask names `name`."""
    if not _is_number(value) or not 0 <= value <= MAX_DELAY:
        raise InvalidTask(f"{name} must be a number of seconds from 0 to {MAX_DELAY:.0f} (a year), got {value!r}")
    return float(value)


_packers = threading.local()


def pack(value: Any) -> bytes:
    """msgpack of `value`, by this thread's own Packer: msgpack.packb makes a new one, with a new
    256 KiB buffer, at each call."""
    packer = getattr(_packers, "packer", None)
    if packer is None:
        packer = _packers.packer = msgpack.Packer(use_bin_type=True)
    return packer.pack(value)


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def pack_checked(value: Any) -> bytes:
    """pack(value), refusing values that would not unpack again (such as dicts with tuple keys)."""
    data = pack(value)
    try:
        unpack(data)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"does not survive a msgpack round trip: {exc}") from None
    return data


def _packs(value: Any) -> bool:
    try:
        pack_checked(value)
        return True
    except (TypeError, ValueError, OverflowError, RecursionError):
        return False
