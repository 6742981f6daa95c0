"""Run one claimed task and record its outcome: done, retried, failed for good, or quarantined."""

from __future__ import annotations

import inspect
import logging
import time
import traceback
from typing import Any, Callable

from .backends.base import Backend, Claim
from .config import Settings
from .errors import BackendUnavailable
from .task import TaskBody, pack, pack_checked, resolve

log = logging.getLogger("taskutils.worker")


class Rejected(Exception):
    """A task that must fail at once, without retries: it can never run as given."""

    def __init__(self, reason: str, ref: str | None = None):
        super().__init__(reason)
        self.ref = ref


def outcome_done(value: Any) -> bytes:
    return pack_checked(["done", value, None])


def outcome_failed(error: str) -> bytes:
    return pack(["failed", None, error])


class TaskRunner:
    """The rules for one claimed task; the backend only stores what they decide."""

    def __init__(self, backend: Backend, settings: Settings, allowed: Callable[[str], bool], consumer: str):
        self.backend, self.settings, self.allowed = backend, settings, allowed
        self.consumer = consumer

    def execute(self, claim: Claim) -> None:
        """Run one claimed task and record its outcome."""
        try:
            body, func = self._prepare(claim)
        except Rejected as exc:
            self._fail(claim, str(exc), ref=exc.ref)
            return
        try:
            value = func(*body.args, **body.kwargs)
        except BaseException:  # a worker survives any task, SystemExit included
            self._failed_attempt(claim, body, traceback.format_exc())
            return
        try:
            outcome = outcome_done(value)
        except (TypeError, ValueError, OverflowError):
            reason = f"PayloadError: return value of {body.ref} ({type(value).__name__}) cannot be encoded with msgpack"
            self._fail(claim, reason, ref=body.ref)
            return
        self._settle(claim, lambda: self.backend.ack(claim, outcome, self.settings.result_ttl))

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
        try:
            func = resolve(body.ref, self.allowed)
        except (ImportError, PermissionError) as exc:
            raise Rejected(f"{type(exc).__name__}: {exc}", body.ref) from None
        try:
            signature = inspect.signature(func)
        except (TypeError, ValueError):
            return body, func  # some builtins have no signature to check
        try:
            signature.bind(*body.args, **body.kwargs)
        except TypeError as exc:
            raise Rejected(f"arguments do not fit {body.ref}{signature}: {exc}", body.ref) from None
        return body, func

    def _failed_attempt(self, claim: Claim, body: TaskBody, error: str) -> None:
        failures = claim.failures + 1
        if failures <= body.repeats_on_failure:
            delay = body.retry_delay_after(failures)
            log.warning(
                "task %s (%s) failed, retry %d of %d in %.3gs:\n%s",
                claim.task_id, body.ref, failures, body.repeats_on_failure, delay, error,
            )
            self._settle(claim, lambda: self.backend.retry(claim, delay))
        else:
            self._fail(claim, error, ref=body.ref)

    def _fail(self, claim: Claim, error: str, ref: str | None) -> None:
        log.error("task %s (%s) failed for good after %d attempt(s):\n%s", claim.task_id, ref, claim.failures + 1, error)
        record = pack(
            {
                "id": claim.task_id,
                "ref": ref,
                "error": error,
                "failures": claim.failures + 1,
                "crashes": claim.crashes,
                "failed_at": time.time(),
                "worker": self.consumer,
            }
        )
        outcome = outcome_failed(error)
        self._settle(claim, lambda: self.backend.fail(claim, outcome, record, self.settings.result_ttl))

    def _settle(self, claim: Claim, transition: Callable[[], bool]) -> None:
        """Apply a transition, retrying through broker outages until the lease would have expired."""
        deadline = time.monotonic() + self.settings.visibility_timeout
        while True:
            try:
                applied = transition()
            except BackendUnavailable:  # the backend has logged the outage once
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
                continue
            if not applied:
                log.warning(
                    "task %s: lease %d is no longer held (handed back at shutdown, or this worker stalled past "
                    "the visibility timeout); its outcome here is dropped and the task's current owner decides",
                    claim.task_id, claim.token,
                )
            return
