"""Task: a function reference, its arguments and its retry policy, and their msgpack encoding."""

from __future__ import annotations

import importlib
import sys
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, NamedTuple

import msgpack

from .errors import InvalidTask, PayloadError

PRIORITY_LIMIT = 2**31


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
    except Exception as exc:
        raise ImportError(f"cannot import module {module_name!r} for task function {ref}: {exc}") from exc
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


def _lookup(module: Any, qualname: str) -> Any:
    target = module
    for part in qualname.split("."):
        target = getattr(target, part, None)
        if target is None:
            return None
    return target


@dataclass(frozen=True)
class Task:
    """A function call to run later: `func(*args, **kwargs)` under a priority and retry policy."""

    func: Callable[..., Any] | str
    args: Iterable[Any] = ()
    kwargs: Mapping[str, Any] | None = None
    priority: int = 0
    repeats_on_failure: int = 0
    delay: float | None = field(default=None, kw_only=True)
    retry_delay: float = field(default=0.0, kw_only=True)
    retry_backoff: float = field(default=1.0, kw_only=True)
    queue: str | None = field(default=None, kw_only=True)
    ref: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "args", tuple(self.args))
        object.__setattr__(self, "kwargs", dict(self.kwargs or {}))
        object.__setattr__(self, "ref", function_ref(self.func))
        if not isinstance(self.priority, int) or abs(self.priority) >= PRIORITY_LIMIT:
            raise InvalidTask(f"priority must be an int between -2**31 and 2**31, got {self.priority!r}")
        if not isinstance(self.repeats_on_failure, int) or self.repeats_on_failure < 0:
            raise InvalidTask(f"repeats_on_failure must be an int >= 0, got {self.repeats_on_failure!r}")
        if self.delay is not None and self.delay < 0:
            raise InvalidTask(f"delay must be >= 0 seconds, got {self.delay!r}")
        if self.retry_delay < 0 or self.retry_backoff < 1:
            raise InvalidTask("retry_delay must be >= 0 and retry_backoff >= 1")
        if not all(isinstance(key, str) for key in self.kwargs):
            raise InvalidTask("kwargs keys must be strings")

    def encode(self) -> bytes:
        """The msgpack body a worker decodes; PayloadError names the argument msgpack cannot carry.

        The body is [ref, args, kwargs, repeats_on_failure, retry_delay, retry_backoff], without
        the trailing fields that hold their defaults (0, 0, 1), and with whole seconds as ints:
        every queued byte costs Redis memory."""
        spec = [self.ref, list(self.args), self.kwargs, self.repeats_on_failure, _compact(self.retry_delay),
                _compact(self.retry_backoff)]
        while len(spec) > 3 and spec[-1] == BODY_DEFAULTS[len(spec) - 1]:
            spec.pop()
        try:
            return pack_checked(spec)
        except (TypeError, ValueError, OverflowError):
            raise PayloadError(self._unencodable() + "; use None, bool, int, float, str, bytes, list, tuple or dict") from None

    def _unencodable(self) -> str:
        for index, value in enumerate(self.args):
            if not _packs(value):
                return f"argument {index} ({type(value).__name__}: {value!r:.60}) of {self.ref} cannot be encoded with msgpack"
        for name, value in self.kwargs.items():
            if not _packs(value):
                return f"argument {name!r} ({type(value).__name__}: {value!r:.60}) of {self.ref} cannot be encoded with msgpack"
        return f"the arguments of {self.ref} cannot be encoded with msgpack"


class TaskBody(NamedTuple):
    """A task as a worker sees it after decoding."""

    ref: str
    args: list[Any]
    kwargs: dict[str, Any]
    repeats_on_failure: int
    retry_delay: float
    retry_backoff: float

    @classmethod
    def decode(cls, body: bytes) -> "TaskBody":
        """Decode a body; ValueError says what is malformed."""
        try:
            spec = unpack(body)
        except Exception as exc:
            raise ValueError(f"task payload is not valid msgpack: {exc}") from None
        if not (isinstance(spec, list) and 3 <= len(spec) <= 6):
            raise ValueError("task payload is not a list of 3 to 6 fields")
        ref, args, kwargs, repeats, delay, backoff = spec + BODY_DEFAULTS[len(spec):]
        if not (isinstance(ref, str) and isinstance(args, list) and isinstance(kwargs, dict)):
            raise ValueError("task payload has a wrong type for its function, args or kwargs")
        if not (isinstance(repeats, int) and isinstance(delay, (int, float)) and isinstance(backoff, (int, float))):
            raise ValueError("task payload has a wrong type for its retry policy")
        return cls(ref, args, kwargs, repeats, float(delay), float(backoff))

    def retry_delay_after(self, failures: int) -> float:
        """Seconds to wait before the retry that follows the given number of failures."""
        return self.retry_delay * self.retry_backoff ** max(failures - 1, 0)


BODY_DEFAULTS: list[Any] = [None, None, None, 0, 0, 1]


def _compact(seconds: float) -> float | int:
    """An integral float as an int (1 byte of msgpack instead of 9)."""
    return int(seconds) if float(seconds).is_integer() else seconds


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
    except (TypeError, ValueError, OverflowError):
        return False
