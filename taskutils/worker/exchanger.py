"""The exchanger: the one thread of a worker that talks to the broker on the hot path.

Each turn it asks the ledger what to do (ledger.py): send what the runners finished and claim
more in one round trip per queue, read an exchange it left in flight, wait on the broker for new
work, or wait for the runners. A worker of one queue keeps its last exchange in flight while
its runners have work, and reads it after sending the next, so the broker serves one while the
worker handles the other. While it waits on the broker, a runner that needs it rings a doorbell:
a small thread that ends the wait through the broker (runners never call the broker).

A queue whose exchanges the broker refuses (an error reply) waits apart, and the other queues
go on (refusals.py).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Iterable, NamedTuple, TypeVar

from ..backends.base import Broker
from ..backends.records import Claim, Exchange, ExchangeReply, Settlement
from ..config import Settings
from ..errors import BackendUnavailable, BrokerError
from .clock import Clock
from .doorbell import Doorbell
from .ledger import ClaimLedger
from .confirmation import confirm_stale
from .observer import Observer
from .refusals import BROKEN_LOG_SECONDS, RefusedQueues
from .replies import record_reply

T = TypeVar("T")
log = logging.getLogger("taskutils.worker")
IDLE_MARGIN = 1.0  # a waiting consumer's registration outlasts its longest wait by this much
OUTAGE_PAUSE = 1.0  # after a call failed for broker_timeout, the next try comes this much later
BROKER_TIMER_SLACK = 0.1  # Redis ends a blocking wait at its next timer tick: up to 1/hz late (hz 10 by default)


class InFlight(NamedTuple):
    """An exchange sent and not read yet."""

    request: Exchange
    read: Callable[[], ExchangeReply]
    sent_at: float


class Exchanger:
    """Sends settlements, claims, and waits for work, for one worker."""

    def __init__(
        self, broker: Broker, ledger: ClaimLedger, settings: Settings, consumer: str,
        hand_out: Callable[[Iterable[Claim]], None], follow_ups_refused: Callable[[Settlement, str], Settlement],
        clock: Clock | None = None, observer: Observer | None = None,
    ):
        """`follow_ups_refused`: how a settlement ends instead when the broker refused its
        follow-up tasks (TaskExecutor.follow_ups_refused)."""
        self._broker, self._ledger, self._settings, self._consumer = broker, ledger, settings, consumer
        self._hand_out, self._clock = hand_out, clock or Clock()
        self._follow_ups_refused = follow_ups_refused
        self._observer = observer or Observer()
        self.turned_at = time.monotonic()  # when its loop last began a turn (the worker's liveness)
        self._queues = settings.queues
        self._in_flight: InFlight | None = None
        self._refused = RefusedQueues(ledger, self._clock)
        self._guard = threading.Lock()
        self._blocked = False  # waiting on the broker: a runner rings the doorbell
        self._rung = False
        self._changed = threading.Event()
        self._finishing = False
        self._wait_refused_at = -BROKEN_LOG_SECONDS  # when a refused wait was last logged
        self._doorbell: Doorbell | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._doorbell = Doorbell(self._broker, self._queues, self._consumer)
        self._thread = threading.Thread(target=self._loop, name="taskutils-exchanger", daemon=True)
        self._thread.start()

    def notify(self) -> None:
        """Something for the exchanger to do: wake it, wherever it waits."""
        with self._guard:
            if not self._blocked:
                self._changed.set()
            elif not self._rung and self._doorbell is not None:
                self._rung = True
                self._doorbell.ring()

    def finish(self) -> None:
        """End the thread once the ledger is drained (the worker stops)."""
        self._finishing = True
        self.notify()

    def join(self, timeout: float | None) -> bool:
        if self._thread is not None:
            self._thread.join(timeout)
        return self._thread is None or not self._thread.is_alive()

    def _loop(self) -> None:
        while not (self._finishing and self._in_flight is None and self._ledger.drained()):
            self.turned_at = time.monotonic()
            try:
                self.step()
            except BackendUnavailable as exc:  # the backend logged the outage once; retry quietly
                self._observer.broker_error()
                log.debug("exchange failed: %s", exc)
                self._pause(OUTAGE_PAUSE)
            except Exception:
                log.exception("exchanger error; going on")
                self._pause(OUTAGE_PAUSE)
        if self._doorbell is not None:
            self._doorbell.close(self._settings.broker_timeout)

    # -- one turn ------------------------------------------------------------------------------

    def step(self) -> None:
        """One turn: confirm stale claims, then send, read, or wait, as the ledger plans. A
        notice that comes after this turn began ends its wait (see notify)."""
        self._changed.clear()
        if self._ledger.rest_due():
            self._rest()
        self._refused.give_back_due()
        stale = self._ledger.confirmations()
        if stale:
            confirm_stale(
                stale, self._broker, self._ledger, self._refused, self._settings.visibility_timeout, self._hand_out,
                self._clock,
            )
        plan = self._ledger.plan()
        if plan.send:
            if not self._send(plan.settle, plan.want):  # every queue it needed is parked
                self._wait(self._refused.until_retry(plan.wait or self._settings.sleep_seconds))
        elif self._in_flight is not None:
            self._read(self._take_in_flight())
        elif plan.block:
            self._block(self._refused.until_retry(plan.wait))
        else:
            self._wait(self._refused.until_retry(plan.wait))

    def _send(self, settle: list[Settlement], want: int) -> bool:
        """Settle and claim, one exchange per queue; False if every queue it needed is parked."""
        by_queue: dict[str, list[Settlement]] = {}
        for settlement in settle:
            by_queue.setdefault(settlement.claim.queue, []).append(settlement)
        for name in [name for name in by_queue if self._refused.parked(name)]:
            self._refused.set_aside(name, by_queue.pop(name))
        queues = [name for name in self._queues if not self._refused.parked(name)]
        if not queues:
            return False
        if len(self._queues) == 1:
            self._send_ahead(self._request(queues[0], by_queue.get(queues[0], []), want))
            return True
        if self._in_flight is not None:
            self._read(self._take_in_flight())
        due: tuple[float | None, float | None] = (None, None)  # the earliest next_due and work_due so far
        for number, name in enumerate(queues):
            settling, ask = by_queue.get(name, []), want
            if not settling and ask <= 0:
                continue
            try:
                reply = self._exchange_now(self._request(name, settling, ask), due)
            except BaseException:  # the settlements of the queues not sent yet go out again later
                self._ledger.unsent_again([s for later in queues[number + 1:] for s in by_queue.get(later, [])], 0)
                raise
            if reply is not None:
                want -= len(reply.claims)
                due = (reply.next_due, reply.work_due)
        return True

    def _request(self, queue: str, settle: list[Settlement], want: int) -> Exchange:
        settings = self._settings
        return Exchange(
            queue, self._consumer, settle, want, settings.visibility_timeout, settings.sleep_seconds + IDLE_MARGIN,
            settings.result_ttl, self._observer.take_tally(queue),
        )

    def _sent(self, request: Exchange, send: Callable[[Exchange], T]) -> tuple[T | None, float]:
        """`send(request)`, told to the ledger; (None, when) if the broker refused it."""
        self._ledger.asked(request.want)
        sent_at = self._clock.now()
        try:
            return send(request), sent_at
        except BrokerError as exc:
            self._observer.broker_error()
            self._refused.park(request, exc)
            return None, sent_at
        except BaseException:
            self._ledger.unsent_again(request.settlements, request.want)
            raise

    def _send_ahead(self, request: Exchange) -> None:
        """Send an exchange and leave it in flight while the runners have work; an earlier one
        in flight is read after this one is sent."""
        read, sent_at = self._sent(request, self._broker.send_exchange)
        if read is None:
            return
        earlier, self._in_flight = self._in_flight, InFlight(request, read, sent_at)
        if earlier is not None:
            self._read(earlier)
        if not self._ledger.work_ahead():
            self._read(self._take_in_flight())

    def _exchange_now(self, request: Exchange, due: tuple[float | None, float | None]) -> ExchangeReply | None:
        """One exchange, its reply's due times merged with `due`, those of the queues sent before."""
        reply, sent_at = self._sent(request, self._broker.exchange)
        if reply is None:
            return None
        reply = reply._replace(next_due=earliest(due[0], reply.next_due), work_due=earliest(due[1], reply.work_due))
        self._record(request, reply, sent_at)
        return reply

    def _take_in_flight(self) -> InFlight:
        sent, self._in_flight = self._in_flight, None
        assert sent is not None
        return sent

    def _read(self, sent: InFlight) -> None:
        try:
            reply = sent.read()
        except BrokerError as exc:
            self._observer.broker_error()
            self._refused.park(sent.request, exc)
            return
        except BaseException:
            self._ledger.unsent_again(sent.request.settlements, sent.request.want)
            raise
        self._record(sent.request, reply, sent.sent_at)

    def _record(self, request: Exchange, reply: ExchangeReply, sent_at: float) -> None:
        self._refused.served(request.queue)
        claims = record_reply(self._ledger, request, reply, sent_at, self._follow_ups_refused)
        if claims:
            self._hand_out(claims)

    # -- waiting -------------------------------------------------------------------------------

    def _rest(self) -> None:
        """The worker paused or stops: once every exchange sent is read (one may have asked for
        work), tell the broker it waits for none, so that new work wakes others instead."""
        if self._in_flight is not None:
            self._read(self._take_in_flight())
        try:
            self._broker.rest(self._queues, self._consumer)
        except BrokerError as exc:  # its registration as waiting expires within sleep_seconds
            log.debug("could not tell the broker this worker rests: %s", exc)
        self._ledger.rested()

    def _block(self, timeout: float) -> None:
        """Wait on the broker for new work (a runner's doorbell or `finish` ends it too). A wait
        for a due time (shorter than sleep_seconds: a delayed task, a key's next start) spends
        its last BROKER_TIMER_SLACK here instead, on this process's clock: a broker may end a
        blocking wait that much late, and every late start of a rate-limited key would push its
        next start back as much. New work that arrives in that last stretch waits for its end."""
        with self._guard:
            if self._ledger.has_unsent() or self._finishing or self._changed.is_set():
                return
            self._blocked, self._rung = True, False
        started = self._clock.now()
        on_broker = timeout if timeout >= self._settings.sleep_seconds else max(timeout - BROKER_TIMER_SLACK, 0.0)
        try:
            if on_broker > 0:
                self._broker.wait(self._queues, self._consumer, on_broker)
        except BrokerError as exc:  # a wake list of the wrong type: look for work every `timeout` instead
            now = self._clock.now()
            if now - self._wait_refused_at >= BROKEN_LOG_SECONDS:
                log.error("waiting for new work failed, looking for it every %.3gs instead: %s", timeout, exc)
                self._wait_refused_at = now
            self._pause(timeout)
        finally:
            with self._guard:
                self._blocked = False
        waited = self._clock.now() - started
        if on_broker < timeout and waited >= on_broker:  # not woken early: wait out the due time here
            self._clock.wait(self._changed, timeout - waited)
        self._ledger.woken()

    def _wait(self, timeout: float) -> None:
        """Wait for a notice (set since this turn began) or `timeout`."""
        self._clock.wait(self._changed, timeout)

    def _pause(self, seconds: float) -> None:
        """After a failure: wait `seconds` unless notified afresh (an old notice must not make a hot loop)."""
        self._changed.clear()
        self._clock.wait(self._changed, seconds)


def earliest(first: float | None, second: float | None) -> float | None:
    """The earlier of two due times, None standing for none."""
    return second if first is None else first if second is None else min(first, second)
