"""Run one claimed task and decide how its claim ends: done, retried, failed for good, or quarantined.

The executor only decides; the exchanger sends the decisions (settlements) to the broker in batches.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
import traceback
from typing import Any, Callable

from ..backends.records import Claim, Ending, Settlement
from ..config import Settings
from ..context import cancel_seen
from ..errors import Throttled
from ..logs import task_fields, task_name
from ..task import TaskBody, pack, pack_checked, resolve
from .observer import Observer

log = logging.getLogger("taskutils.worker")
SCALARS = frozenset({str, int, float, bool, bytes})  # always unpack as they were packed
THROTTLE_LOG_SECONDS = 60.0
COUNT_LIMIT = 10**15  # failure and crash counts are kept below this (Lua keeps whole numbers up to it)
OUTCOMES = {Ending.DONE: "done", Ending.RETRY: "retried", Ending.FAILED: "failed", Ending.THROTTLE: "throttled",
            Ending.HAND_BACK: "handed_back"}


class Rejected(Exception):
    """A task that must fail at once, without retries: it can never run as given."""

    def __init__(self, reason: str, ref: str | None = None):
        super().__init__(reason)
        self.ref = ref


def outcome_done(value: Any) -> bytes:
    """The stored outcome of a task that returned `value`: empty for None (most tasks)."""
    if value is None:
        return b""
    if type(value) in SCALARS:
        return pack(["done", value, None])
    return pack_checked(["done", value, None])


def outcome_failed(error: str) -> bytes:
    return pack(["failed", None, error])


class TaskExecutor:
    """The rules for one claimed task."""

    def __init__(
        self, settings: Settings, allowed: Callable[[str], bool], consumer: str, observer: Observer | None = None,
    ):
        self.settings, self.allowed, self.consumer = settings, allowed, consumer
        self.observer = observer or Observer()
        self._resolved: dict[str, tuple[Callable[..., Any], inspect.Signature | None]] = {}
        self._resolving = threading.Lock()
        self._throttle_logged: dict[str, float] = {}  # key or function -> when a throttle was last logged

    def run(self, claim: Claim) -> Settlement:
        """Run one claimed task; returns how its claim ends, whatever the task does."""
        try:
            return self._run(claim)
        except BaseException as exc:  # a bug deciding the outcome: fail the task with the reason, never leave it held
            log.exception("task %s: could not decide its outcome", task_name(claim))
            reason = f"taskutils could not decide the outcome: {type(exc).__name__}: {exc}"
            return Settlement(claim, Ending.FAILED, outcome_failed(reason), pack({"id": claim.task_id, "error": reason}))

    def follow_ups_refused(self, settlement: Settlement, reason: str) -> Settlement:
        """How a task ends whose follow-up tasks (enqueue_on_success) the broker refused, and so
        its done outcome with them: as a failed attempt, retried as its policy says."""
        claim, error = settlement.claim, f"its follow-up tasks could not be enqueued: {reason}"
        try:
            body = TaskBody.decode(claim.body)
        except ValueError:  # it ran, so it decoded: only a bug lands here
            return self._fail(claim, error, ref=None)
        return self._failed_attempt(claim, body, error)

    def _run(self, claim: Claim) -> Settlement:
        try:
            body, func = self._prepare(claim)
        except Rejected as exc:
            settlement = self._fail(claim, str(exc), ref=exc.ref)
            outcome = "quarantined" if claim.crashes >= self.settings.max_crashes else "failed"
            self.observer.ended(claim, "", outcome, None)  # its ref may be anything: not a label value
            return settlement
        debug = log.isEnabledFor(logging.DEBUG)
        if debug:
            log.debug("task %s (%s) started", task_name(claim), body.ref, extra=task_fields(claim, body.ref))
        self.observer.started(claim, body.enqueued_at)
        began = time.monotonic()
        settlement = self._call(claim, body, func)
        seconds, outcome = time.monotonic() - began, OUTCOMES[settlement.ending]
        if outcome == "done" and cancel_seen():
            outcome = "cancelled"
        self.observer.ended(claim, body.ref, outcome, seconds)
        if debug:
            log.debug("task %s (%s) ended: %s in %.3fs", task_name(claim), body.ref, outcome, seconds,
                      extra=task_fields(claim, body.ref, seconds, outcome))
        return settlement

    def _call(self, claim: Claim, body: TaskBody, func: Callable[..., Any]) -> Settlement:
        try:
            value = func(*body.args, **body.kwargs)
        except Throttled as exc:
            return self._throttled(claim, body, exc.retry_after)
        except TypeError:
            misfit = self._misfit(body)  # checked only now: binding a signature costs more than the call
            if misfit:
                return self._fail(claim, misfit, ref=body.ref)
            return self._failed_attempt(claim, body, traceback.format_exc())
        except BaseException:  # a worker survives any task, SystemExit included
            return self._failed_attempt(claim, body, traceback.format_exc())
        try:
            return Settlement(claim, Ending.DONE, outcome_done(value))
        except (TypeError, ValueError, OverflowError):
            reason = f"PayloadError: return value of {body.ref} ({type(value).__name__}) cannot be encoded with msgpack"
            return self._fail(claim, reason, ref=body.ref)

    def _prepare(self, claim: Claim) -> tuple[TaskBody, Callable[..., Any]]:
        """Decode and check a claim; Rejected says why it can never run."""
        if claim.crashes >= self.settings.max_crashes:
            raise Rejected(f"quarantined: crashed its worker {claim.crashes} times (max_crashes={self.settings.max_crashes})")
        if len(claim.body) > self.settings.max_payload:
            raise Rejected(f"payload of {len(claim.body)} bytes is over max_payload={self.settings.max_payload}")
        try:
            body = TaskBody.decode(claim.body)
        except ValueError as exc:
            raise Rejected(f"ValueError: {exc}") from None
        return body, self._function(body.ref)[0]

    def _misfit(self, body: TaskBody) -> str | None:
        """Why the arguments do not fit the function's signature, or None if they do."""
        signature = self._function(body.ref)[1]
        if signature is None:
            return None
        try:
            signature.bind(*body.args, **body.kwargs)
        except TypeError as exc:
            return f"arguments do not fit {body.ref}{signature}: {exc}"
        return None

    def _function(self, ref: str) -> tuple[Callable[..., Any], inspect.Signature | None]:
        """The allowed function named `ref` and its signature, resolved once (allow lists only grow)."""
        found = self._resolved.get(ref)
        if found is not None:
            return found
        try:
            func = resolve(ref, self.allowed)
        except (ImportError, PermissionError) as exc:
            raise Rejected(f"{type(exc).__name__}: {exc}", ref) from None
        try:
            signature: inspect.Signature | None = inspect.signature(func)
        except (TypeError, ValueError):
            signature = None  # some builtins have no signature to check
        with self._resolving:
            self._resolved[ref] = (func, signature)
        return func, signature

    def _throttled(self, claim: Claim, body: TaskBody, retry_after: float) -> Settlement:
        """Back without an attempt used; logged once per key (or function) per THROTTLE_LOG_SECONDS."""
        subject = f"key {claim.key!r}" if claim.key else body.ref
        now = time.monotonic()
        if now - self._throttle_logged.get(subject, -THROTTLE_LOG_SECONDS) >= THROTTLE_LOG_SECONDS:
            self._throttle_logged[subject] = now
            log.warning("task %s (%s) throttled: %s waits %.3gs (logged once a minute per key)",
                        task_name(claim), body.ref, subject, retry_after, extra=task_fields(claim, body.ref, outcome="throttled"))
        return Settlement(claim, Ending.THROTTLE, delay=retry_after)

    def _failed_attempt(self, claim: Claim, body: TaskBody, error: str) -> Settlement:
        failures = claim.failures + 1
        if failures > body.repeats_on_failure:
            return self._fail(claim, error, ref=body.ref)
        try:
            delay = body.retry_delay_after(failures)
        except (OverflowError, ValueError) as exc:
            return self._fail(claim, f"{error}\nits retry delay cannot be computed ({exc}): failed for good", ref=body.ref)
        log.warning(
            "task %s (%s) failed, retry %d of %d in %.3gs:\n%s", task_name(claim), body.ref, failures,
            body.repeats_on_failure, delay, error, extra=task_fields(claim, body.ref, outcome="retried", error=error),
        )
        return Settlement(claim, Ending.RETRY, delay=delay)

    def _fail(self, claim: Claim, error: str, ref: str | None) -> Settlement:
        log.error("task %s (%s) failed for good after %d attempt(s):\n%s", task_name(claim), ref, claim.failures + 1, error,
                  extra=task_fields(claim, ref, outcome="failed", error=error))
        record = pack(
            {
                "id": claim.task_id,
                "ref": ref,
                "error": error,
                "failures": min(claim.failures + 1, COUNT_LIMIT),
                "crashes": min(claim.crashes, COUNT_LIMIT),
                "failed_at": time.time(),
                "worker": self.consumer,
            }
        )
        return Settlement(claim, Ending.FAILED, outcome_failed(error), record)
