"""The threads of one process consuming queues: exchange with the broker, run tasks, heartbeat, stop.

Runner threads run tasks and queue up how each claim ended (its settlement). One broker thread
sends those settlements and claims the next tasks in a single round trip per queue, so under
load each round trip carries many tasks. Short tasks are prefetched (claimed a little ahead); on
a queue with a concurrency cap those claims are held ahead outside the cap, and each starts only
in the slot of a task that finished here, passed on with that task's settlement (see _run).
While the runners still hold enough prefetched work, the broker thread lets settlements gather
for a few milliseconds so one round trip carries two per thread; runners wake it only when a
batch is ready, and it looks for settlements by itself every GATHER_SECONDS while claims are
held. A worker of one queue keeps its last exchange in flight
while its runners still have work, and reads it after sending the next, so the backend serves
one while the worker handles the other. An idle worker blocks on the backend until woken.
When the worker has held nothing for a moment, one of its idle runners takes over that blocking
wait, so a task an enqueue hands straight to it starts on the thread that received it; the broker
thread waits beside it under a name of its own, so that the runner wakes no thread first (on a
virtual machine, waking a thread on another CPU costs the waker tens of microseconds).
Once the process's CPU is saturated, a worker given a CpuPin keeps its threads on one CPU, and
fewer runners take claims, down to two, while the others park (pacing.py, affinity.py): under the
GIL more threads, or more CPUs, would add only contention.
A heartbeat thread renews the leases of every claim the worker holds and its registration.
"""

from __future__ import annotations

import contextvars
import logging
import os
import queue as queue_module
import socket
import threading
import time
import uuid
from collections import deque
from typing import Callable, Iterable, NamedTuple, Union

from .backends.base import HAND_BACK_KIND, Backend, Claim, ClaimBatch, Settlement
from .config import Settings
from .errors import BackendUnavailable, BrokerError
from .pacing import STALL_SECONDS, Pin, RunnerPacer
from .runner import TaskRunner

log = logging.getLogger("taskutils.worker")
BROKEN_LOG_SECONDS = 60.0
SHORT_TASK_SECONDS = 0.05  # tasks shorter than this on average are prefetched
PREFETCH_SECONDS = 0.01  # a thread of short tasks holds about this much work ahead ...
MAX_PREFETCH_PER_THREAD = 3  # ... in 1 to this many claims
GATHER_SECONDS = 0.005  # how often the broker thread looks for settlements, and how long they gather
QUIET_SECONDS = 0.05  # an idle worker waits this long on the broker thread before a runner takes the wait
BESIDE_MARGIN = 0.02  # the broker thread's entry beside a runner ends this much sooner than the runner's (see _wait_beside)


class InFlight(NamedTuple):
    """An exchange the broker thread sent and has not read the result of yet."""

    queue: str
    settling: list[Settlement]
    asked: int
    ahead: int  # of which claims ahead
    result: Callable[[], tuple[list[bool | None], ClaimBatch]]
    sent_at: float


class WaitOnBackend(NamedTuple):
    """An inbox item: the runner that takes it waits on the backend as this worker (see _block)."""

    timeout: float


InboxItem = Union[Claim, WaitOnBackend, None]  # None: the runner that takes it ends


# Gives up the processor, releasing the GIL meanwhile, so a thread just woken can run.
yield_processor: Callable[[], None] = getattr(os, "sched_yield", lambda: time.sleep(0))

# The backend of the handler or worker running the current task (LockWrapper uses it).
current_backend: contextvars.ContextVar[Backend | None] = contextvars.ContextVar("taskutils_backend", default=None)


def module_allowed(module: str, allowed: Iterable[str]) -> bool:
    """True if `module` is one of `allowed` or a submodule of one."""
    return any(module == name or module.startswith(name + ".") for name in allowed)


def allow_all(module: str) -> bool:
    """The embedded backend's policy: only this process can enqueue, so anything importable runs."""
    return True


class Worker:
    """Runs tasks from `settings.queues` on `settings.threads` threads until stopped; `pin`, if
    given, may keep the whole process on one CPU while its tasks saturate the interpreter (only
    for a process of its own, such as taskutils-worker's: see affinity.py)."""

    def __init__(self, backend: Backend, settings: Settings, allowed: Callable[[str], bool], pin: Pin | None = None):
        self.backend = backend
        self.settings = settings
        self.consumer = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._beside = f"{self.consumer}:broker"  # the broker thread's name while a runner waits as the worker
        self.runner = TaskRunner(settings, allowed, self.consumer)
        self._inbox: queue_module.SimpleQueue[InboxItem] = queue_module.SimpleQueue()
        self._slots_waiting = 0  # claims not held ahead that no runner has started yet
        self._ahead_held = 0  # claims held ahead (Claim.ahead) not started yet
        self._ahead: deque[tuple[float, Claim]] = deque()  # of which those waiting for a runner to finish a task, since when
        self._pacer = RunnerPacer(settings.threads, pin=pin)
        self._unpark: queue_module.SimpleQueue[None] = queue_module.SimpleQueue()  # wakes a parked runner
        self._settled: queue_module.SimpleQueue[Settlement] = queue_module.SimpleQueue()
        self._unsent: list[Settlement] = []  # settlements the broker thread has not sent yet
        self._unsent_since = 0.0  # when the oldest of them was collected
        self._in_flight: InFlight | None = None  # holds _exchanging while set
        self._held: dict[tuple[str, str], Claim] = {}  # every claim not yet settled: waiting or running
        self._state = threading.Lock()
        self._seconds_per_task = 1.0  # running average, decides prefetching
        self._capped = True  # until a claim says otherwise
        self._paused = False
        self._blocked_as: str | None = None  # the name the broker thread waits on the backend under, if it does
        self._runner_listening = False  # a runner waits on the backend as this worker (WaitOnBackend) ...
        self._runner_until = 0.0  # ... until then at most
        self._registered = False  # no task was handed to a runner since this worker last asked for work
        self._registered_at = 0.0  # when it last asked for work (its idle entry lasts sleep_seconds from then)
        self._exchanging = threading.Lock()  # held by the broker thread around its exchanges
        self._wakeup = threading.Event()
        self._stopping = threading.Event()
        self._drained = threading.Event()  # runners are gone: the broker thread may end
        self._idle = threading.Event()  # nothing is held any more: the heartbeat may end
        self._runners: list[threading.Thread] = []
        self._broker: threading.Thread | None = None
        self._heart: threading.Thread | None = None
        self._broken: dict[str, float] = {}  # queue -> when its broker error was last logged

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Register, then start the runner, broker and heartbeat threads."""
        self._register()
        for index in range(self.settings.threads):
            self._runners.append(self._spawn(lambda runner=index: self._run_loop(runner), f"taskutils-runner-{index}"))
        self._broker = self._spawn(self._broker_loop, "taskutils-broker")
        self._heart = self._spawn(self._heartbeat_loop, "taskutils-heartbeat")

    @staticmethod
    def _spawn(target: Callable[[], None], name: str) -> threading.Thread:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        return thread

    def pause(self) -> None:
        """Stop claiming new tasks; running ones go on."""
        with self._state:
            self._paused = True
        self._wakeup.set()  # an exchange in flight is read at once
        self._rest()
        self._poke(always=True)

    def _rest(self) -> None:
        """Tell the backend not to wake this worker or hand it tasks while it does not claim."""
        try:
            with self._exchanging:  # an exchange in flight may register it idle: rest after it
                for name in (self.consumer, self._beside):
                    self.backend.rest(self.settings.queues, name)
        except (BackendUnavailable, BrokerError):
            pass  # an entry left behind expires within sleep_seconds

    def resume(self) -> None:
        """Claim tasks again."""
        with self._state:
            self._paused = False
        self._poke(always=True)

    def stop(self, timeout: float | None = None) -> bool:
        """Stop claiming and let running tasks finish for up to `timeout` seconds.

        Claims not started yet and tasks still running at the end go back to the queue at
        once. True if every running task finished."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self._stopping.set()
        self._wakeup.set()
        self._rest()
        self._poke(always=True)
        for _ in self._runners:
            self._inbox.put(None)
            self._unpark.put(None)
        for thread in self._runners:
            thread.join(None if deadline is None else max(deadline - time.monotonic(), 0))
        finished = not any(thread.is_alive() for thread in self._runners)
        with self._state:
            self._pacer.start_over()  # a stopped worker leaves its CPU to others
        self._drained.set()
        self._wakeup.set()
        if self._broker is not None:
            self._broker.join(self.settings.sleep_seconds + self.settings.broker_timeout)
        self.hand_back()
        self._idle.set()
        if self._heart is not None:
            self._heart.join(self.settings.broker_timeout)
        try:
            self.backend.unregister_worker(self.consumer)
        except BackendUnavailable:
            pass
        return finished

    def hand_back(self) -> int:
        """Give every claim still held here back to its queue now; returns how many went back."""
        with self._state:
            claims = list(self._held.values())
            self._held.clear()
            self._ahead.clear()
            self._ahead_held = self._slots_waiting = 0
        returned = 0
        for claim in claims:
            try:
                returned += self.backend.release(claim)
            except (BackendUnavailable, BrokerError) as exc:
                log.warning("task %s: could not hand back (%s); its lease will expire", claim.task_id, exc)
        if claims:
            log.warning("handed %d running task(s) back to the queue", returned)
        return returned

    @property
    def running(self) -> int:
        """How many tasks this worker is running now."""
        with self._state:
            return self._pacer.running

    # -- runners ------------------------------------------------------------------------------

    def _run_loop(self, runner: int) -> None:
        current_backend.set(self.backend)
        item = self._inbox.get()
        while item is not None:
            if isinstance(item, WaitOnBackend):
                claim = self._listen(item.timeout)
            else:
                claim = self._startable(item)
            taken = self._run(runner, claim) if claim is not None else []
            item = taken[0] if taken else self._inbox.get()

    def _startable(self, claim: Claim) -> Claim | None:
        """A claim from the inbox, if this runner may start it. One held ahead needs the slot of a
        task that finishes here: it waits for the next runner to finish one (see _unstick)."""
        if not claim.ahead or self._stopping.is_set():
            return claim
        with self._state:
            self._ahead.append((time.monotonic(), claim))
        self._unstick()
        return None

    def _run(self, runner: int, claim: Claim) -> list[InboxItem]:
        """Run a claim, then each claim held ahead that starts in its slot; returns the inbox item
        taken meanwhile, if any."""
        while True:
            settlement, park = self._execute(runner, claim)
            successor, taken = None, []
            if (  # _ahead_held read without the lock: a claim ahead handed out meanwhile waits for the next task
                self._ahead_held and settlement is not None and not park and settlement.kind != HAND_BACK_KIND
                and not self._stopping.is_set()
            ):
                successor, taken = self._successor()  # else the broker thread's round (_unstick) frees what waits
            if settlement is not None:
                if successor is not None:
                    settlement = settlement._replace(passes_slot_to=successor)
                self._settled.put(settlement)
            ready = self._stopping.is_set() or self._batch_ready()
            self._poke(wake_local=ready)  # else it comes within GATHER_SECONDS by itself
            if ready and not self._inbox.empty():  # this runner would go on holding the GIL: let the
                yield_processor()  # broker thread take it and send the batch now
            if park:
                self._park()
            if successor is None:
                return taken
            claim = successor

    def _execute(self, runner: int, claim: Claim) -> tuple[Settlement | None, bool]:
        """Run one task (or hand it back unstarted when stopping); returns its settlement (None if
        the runner failed: the lease will expire) and whether this runner parks now."""
        started = time.monotonic()
        with self._state:
            self._slots_waiting -= not claim.ahead
            stopping = self._stopping.is_set()
            if not stopping:
                self._pacer.started(runner, started)
        if stopping:  # claimed but not started: it goes back at once
            return Settlement(claim, HAND_BACK_KIND), False
        try:
            settlement = self.runner.execute(claim)
        except Exception:  # the runner decides for every task; this is a bug, and the lease will expire
            log.exception("could not decide the outcome of task %s", claim.task_id)
            settlement = None
        now = time.monotonic()
        with self._state:
            self._seconds_per_task += (now - started - self._seconds_per_task) * 0.1
            park, wake_parked = self._pacer.finished(runner, now, backlog=self._backlog())
        if wake_parked:
            self._unpark.put(None)
        return settlement, park

    def _successor(self) -> tuple[Claim | None, list[InboxItem]]:
        """For a runner whose task finished: a claim held ahead to start in that task's slot, or
        else the next inbox item, if any."""
        with self._state:
            if self._ahead:
                self._ahead_held -= 1
                return self._ahead.popleft()[1], []
        try:
            item = self._inbox.get_nowait()
        except queue_module.Empty:
            return None, []
        if isinstance(item, Claim) and item.ahead and not self._stopping.is_set():
            with self._state:
                self._ahead_held -= 1
            return item, []
        return None, [item]

    def _unstick(self) -> None:
        """Hand back the claims held ahead that wait for a slot when no task here will free one
        soon: none runs or is about to start, or the oldest has waited STALL_SECONDS (a long task
        holds the slot). Back at the front of the queue, they take the next free slot anywhere."""
        now = time.monotonic()
        with self._state:
            if not self._ahead:
                return
            if (self._pacer.running > 0 or self._slots_waiting > 0) and now - self._ahead[0][0] < STALL_SECONDS:
                return
            stuck = [claim for _, claim in self._ahead]
            self._ahead.clear()
            self._ahead_held -= len(stuck)
        for claim in stuck:
            self._settled.put(Settlement(claim, HAND_BACK_KIND))
        if stuck:
            self._poke()

    def _backlog(self) -> bool:
        """Claims wait here for a runner."""
        return not self._inbox.empty() or bool(self._ahead)

    def _park(self) -> None:
        """Take no claims while the pacer has runners enough taking them (see pacing.py). Looks
        again every STALL_SECONDS; an idle worker wakes its parked runners (see _block), so that
        every runner then waits on the inbox and none polls."""
        while True:
            try:
                self._unpark.get(timeout=STALL_SECONDS)
                break
            except queue_module.Empty:
                pass
            with self._state:
                if self._pacer.may_resume(time.monotonic(), backlog=self._backlog()):
                    break
        with self._state:
            self._pacer.resumed()

    def _poke(self, always: bool = False, wake_local: bool = True) -> None:
        """Wake the broker thread: locally (unless only a wait on the backend needs breaking), and
        through the backend if it is blocked there; `always` also ends a runner's wait (see _block)."""
        if wake_local:
            self._wakeup.set()
        with self._state:
            blocked = self._blocked_as
        for name in (self.consumer, self._beside) if always else (blocked,) if blocked else ():
            try:
                self.backend.interrupt(self.settings.queues, name)
            except (BackendUnavailable, BrokerError):
                pass  # the broker thread wakes by itself within sleep_seconds

    # -- broker thread ------------------------------------------------------------------------

    def _broker_loop(self) -> None:
        while not (self._drained.is_set() and self._settled.empty() and not self._unsent and self._in_flight is None):
            try:
                self.exchange_once()
            except BackendUnavailable as exc:  # the backend has logged the outage once
                log.debug("exchange failed: %s", exc)
                self._drained.wait(min(1.0, self.settings.sleep_seconds))
            except Exception:
                log.exception("broker thread error; going on")
                self._drained.wait(self.settings.sleep_seconds)

    def exchange_once(self) -> int:
        """Send finished claims and claim more in one round trip per queue, or wait; returns tasks claimed."""
        self._wakeup.clear()
        if self._ahead:
            self._unstick()
        while not self._settled.empty():
            if not self._unsent:
                self._unsent_since = time.monotonic()
            self._unsent.append(self._settled.get())
        gather = self._gather_seconds()
        if gather > 0:
            self._wakeup.wait(gather)  # a runner wakes it when the batch is ready
            return 0
        if self._in_flight is None:  # pause() and stop() rest between exchanges: none registers this worker idle after them
            self._exchanging.acquire()
        try:
            want, ahead = self._room(settling=len(self._unsent))  # claims ahead only go along with the rest
            nothing_to_do = not self._unsent and want == 0 and self._in_flight is None
            if not nothing_to_do:
                claimed, next_due = self._exchange_queues(want, ahead)
        finally:
            if self._in_flight is None:
                self._exchanging.release()
        if nothing_to_do:  # while claims are held, look for their settlements every GATHER_SECONDS
            self._wakeup.wait(GATHER_SECONDS if self._held else self.settings.sleep_seconds)
            return 0
        if want > 0 and claimed == 0 and not self._unsent and self._in_flight is None:
            self._block(min(next_due, STALL_SECONDS) if self._ahead else next_due)  # see _unstick
        return claimed

    def _gather_seconds(self) -> float:
        """How long settlements may still wait for others before the next round trip (see _batch_ready),
        counted from the oldest of them or from the exchange in flight; 0: go now."""
        if self._stopping.is_set() or self._paused or self._batch_ready():
            return 0.0
        if self._in_flight is not None:
            return GATHER_SECONDS - (time.monotonic() - self._in_flight.sent_at)
        if self._unsent:
            return GATHER_SECONDS - (time.monotonic() - self._unsent_since)
        return 0.0

    def _exchange_queues(self, want: int, ahead: int) -> tuple[int, float]:
        """One exchange per queue with something to settle or claim (`want` claims, and `ahead`
        more on a capped queue); (tasks claimed, seconds to the next due). An exchange left in
        flight by the last call is read after the first one sent here."""
        by_queue: dict[str, list[Settlement]] = {}
        for settlement in self._unsent:
            by_queue.setdefault(settlement.claim.queue, []).append(settlement)
        claimed, earlier_claimed, next_due = 0, 0, self.settings.sleep_seconds
        sent_here = False
        for name in dict.fromkeys([*self.settings.queues, *by_queue]):
            settling, ask = by_queue.get(name, []), want - claimed if name in self.settings.queues else 0
            if not settling and ask <= 0:
                continue
            ask_ahead = ahead if name in self.settings.queues else 0
            if ask > 0:  # before it is sent: a hand-off from an older entry may follow (_listen)
                self._registered, self._registered_at = True, time.monotonic()
            try:
                result = self.backend.exchange_later(
                    name, self.consumer, settling, ask, self.settings.visibility_timeout,
                    self.settings.sleep_seconds, self.settings.result_ttl, ahead=ask_ahead,
                )
            except BrokerError as exc:  # one broken queue must not stop the others
                self._report_broken(name, exc)
                continue
            self._unsent = [settlement for settlement in self._unsent if settlement.claim.queue != name]
            sent_here = True
            earlier, self._in_flight = self._in_flight, InFlight(name, settling, ask, ask_ahead, result, time.monotonic())
            if earlier is not None:  # its claims were counted in `want`, not in this call's asks
                earlier_claimed, next_due = self._read(earlier, earlier_claimed, next_due)
            if not self._keep_in_flight():
                claimed, next_due = self._read(self._take_in_flight(), claimed, next_due)
        if self._in_flight is not None and not sent_here:  # nothing sent to read it after
            earlier_claimed, next_due = self._read(self._take_in_flight(), earlier_claimed, next_due)
        return claimed + earlier_claimed, next_due

    def _keep_in_flight(self) -> bool:
        """Leave the exchange just sent unread: the runners have work enough meanwhile (one queue only,
        so that the claims of each queue are known before the next is asked)."""
        return (
            len(self.settings.queues) == 1 and not self._paused and not self._stopping.is_set()
            and self._waiting() > self._taking() // 2
        )

    def _take_in_flight(self) -> InFlight:
        sent, self._in_flight = self._in_flight, None
        assert sent is not None
        return sent

    def _read(self, sent: InFlight, claimed: int, next_due: float) -> tuple[int, float]:
        """Wait for an exchange sent earlier and hand out its claims; adds to (claimed, next due)."""
        try:
            applied, batch = sent.result()
        except BrokerError as exc:  # one broken queue must not stop the others
            self._unsent = sent.settling + self._unsent
            self._report_broken(sent.queue, exc)
            return claimed, next_due
        except BaseException:
            self._unsent = sent.settling + self._unsent  # sent again later: a settled lease refuses a second
            raise
        self._settled_in_broker(sent.settling, applied)
        self._capped = batch.capped if sent.asked + sent.ahead > 0 else self._capped
        if batch.next_due is not None:
            next_due = min(next_due, batch.next_due)
        return claimed + self._hand_out(batch.claims), next_due

    def _room(self, settling: int = 0) -> tuple[int, int]:
        """How many more claims to ask for: free runners, plus a prefetch for short tasks; on a
        capped queue, (claims for free runners, claims ahead for the prefetch). `settling` claims
        are settled by the same round trip before it claims, so they free their slots."""
        in_flight = self._in_flight  # settles and claims too, when its result is read
        with self._state:
            if self._paused or self._stopping.is_set():
                return 0, 0
            held, held_ahead = len(self._held) - settling, self._ahead_held
            if in_flight is not None:
                held += in_flight.asked + in_flight.ahead - len(in_flight.settling)
                held_ahead += in_flight.ahead
            threads, prefetch = self.settings.threads, self.settings.threads * self._prefetch_per_thread()
            if not self._capped:
                return max(threads + prefetch - held, 0), 0
            slots = held - held_ahead
            if slots <= 0 or len(self.settings.queues) > 1:  # claims ahead start only in a slot held here
                prefetch = 0
            return max(threads - slots, 0), max(prefetch - held_ahead, 0)

    def _prefetch_per_thread(self) -> int:
        """Claims held ahead per thread: none for long tasks, else about PREFETCH_SECONDS of work
        (call with _state held)."""
        if self._seconds_per_task >= SHORT_TASK_SECONDS:
            return 0
        return max(1, min(MAX_PREFETCH_PER_THREAD, int(PREFETCH_SECONDS / self._seconds_per_task)))

    def _batch_ready(self) -> bool:
        """Worth a round trip now: two threads' worth of settlements wait, or the runners are
        about to run out of claims."""
        settled = len(self._unsent) + self._settled.qsize()
        return settled >= 2 * self.settings.threads or self._waiting() <= self._taking() // 2

    def _waiting(self) -> int:
        """Claims here that no runner has taken yet."""
        return self._inbox.qsize() + len(self._ahead)

    def _taking(self) -> int:
        """How many runners take claims now (the others are parked, see pacing.py)."""
        return self.settings.threads - self._pacer.parked

    def _settled_in_broker(self, settling: list[Settlement], applied: list[bool | None]) -> None:
        with self._state:
            for settlement, done in zip(settling, applied):
                self._held.pop((settlement.claim.queue, settlement.claim.task_id), None)
                if done is None:
                    log.info(
                        "task %s: its outcome was sent again after the reply was lost, and refused: most likely "
                        "the first attempt settled it", settlement.claim.task_id,
                    )
                elif not done:
                    log.warning(
                        "task %s: lease %d is no longer held (handed back at shutdown, or this worker stalled past "
                        "the visibility timeout); its outcome here is dropped and the task's current owner decides",
                        settlement.claim.task_id, settlement.claim.token,
                    )

    def _hand_out(self, claims: list[Claim]) -> int:
        with self._state:
            for claim in claims:
                self._held[(claim.queue, claim.task_id)] = claim
                if claim.ahead:
                    self._ahead_held += 1
                else:
                    self._slots_waiting += 1
        for claim in claims:
            self._inbox.put(claim)
        return len(claims)

    def _block(self, timeout: float) -> None:
        """Wait for work on the backend, unless a runner finished meanwhile (it would interrupt).
        When nothing is held and QUIET_SECONDS passed with nothing, an idle runner takes over this
        worker's wait for the rest and runs a handed task itself (back-to-back work stays on this
        thread: handing the wait over costs a thread switch just when the next task tends to
        arrive). This thread then waits beside it (_wait_beside)."""
        with self._state:
            if not self._settled.empty() or self._stopping.is_set():
                return
            beside = self._runner_listening
            if not beside and not self._registered:
                return  # a runner was handed a task since this worker asked for work: ask again first
            delegate = not beside and not self._held and self.settings.threads > 0 and timeout > QUIET_SECONDS
            if not beside:
                self._blocked_as = self.consumer
        if beside:
            self._wait_beside(timeout)
            return
        woken = self._wait_as(self.consumer, QUIET_SECONDS if delegate else timeout)
        if delegate and woken is None and not self._wakeup.is_set():  # quiet: a runner waits out the rest
            with self._state:
                parked = self._pacer.parked
                self._pacer.start_over()  # idle: every runner takes claims again, on every CPU
                self._runner_listening = True
                self._runner_until = time.monotonic() + timeout - QUIET_SECONDS
            for _ in range(parked):
                self._unpark.put(None)
            self._inbox.put(WaitOnBackend(timeout - QUIET_SECONDS))
            self._wait_beside(timeout - QUIET_SECONDS)
            return
        claim = self._taken(woken)
        if claim is not None:
            self._hand_out([claim])

    def _wait_as(self, name: str, timeout: float) -> str | Claim | None:
        """The broker thread's wait on the backend as `name`, `_blocked_as` set by the caller
        (with the same lock held as its last look at the settlements: _poke interrupts it)."""
        try:
            return self.backend.wait(self.settings.queues, name, timeout)
        finally:
            with self._state:
                self._blocked_as = None

    def _wait_beside(self, timeout: float) -> None:
        """While a runner waits as this worker, wait too, under this thread's own name, for no
        longer than the runner. Its entry ends BESIDE_MARGIN before both the worker's entry and
        that wait, so an enqueue hands its task to the runner first (the entry that lasts longest)
        and the next one here: the runner need not wake this thread to wait again while it runs
        its task (_listen). A wait that ends before `until` rests the name, unless a task used
        it up. With several queues (the worker's entries on the others would outlast this
        thread's), or no other runner free, this thread waits for the runner to wake it instead."""
        now = time.monotonic()
        until = min(now + timeout, self._runner_until)
        entry_ends = min(self._registered_at + self.settings.sleep_seconds, until) - BESIDE_MARGIN
        with self._exchanging:  # pause() and stop() rest after it: no entry outlives them
            want = self._room()[0] - 1  # the listening runner gets its task through its own wait
            beside = until > now and want > 0 and len(self.settings.queues) == 1
            if beside:
                try:
                    _, batch = self.backend.exchange(
                        self.settings.queues[0], self._beside, [], want, self.settings.visibility_timeout,
                        max(entry_ends - time.monotonic(), 0.0), self.settings.result_ttl,
                    )
                except BrokerError as exc:
                    self._report_broken(self.settings.queues[0], exc)
                    return
                self._capped = batch.capped
        if not beside:  # the runner wakes it when its wait ends (it was not waiting beside)
            self._wakeup.wait(max(until - now, 0.0) + self.settings.broker_timeout + 1.0)
            return
        if self._hand_out(batch.claims):
            return
        wait = until - time.monotonic()
        claim, wait = None, wait if batch.next_due is None else min(wait, batch.next_due)
        try:
            with self._state:
                if not self._settled.empty() or self._stopping.is_set() or not self._runner_listening:
                    return  # the runner's wait ended meanwhile: this thread waits as the worker again
                self._blocked_as = self._beside
            claim = self._taken(self._wait_as(self._beside, wait))
        finally:
            if claim is None and time.monotonic() < until:  # else the wait outlived the entry
                self.backend.rest(self.settings.queues, self._beside)
        if claim is not None:
            self._hand_out([claim])

    def _listen(self, timeout: float) -> Claim | None:
        """On a runner: this worker's wait on the backend, taken over from the broker thread; a
        task handed to this worker runs on this thread at once. The broker thread, waiting beside
        (see _block) for no longer, is woken only if this wait brings a wake token or fails, or if
        it did not wait beside."""
        claim, woken, failed = None, None, False
        try:
            woken = self.backend.wait(self.settings.queues, self.consumer, timeout)
            claim = self._taken(woken)
        except (BackendUnavailable, BrokerError) as exc:  # the broker thread meets the outage next
            log.debug("wait failed: %s", exc)
            failed = True
        except Exception:
            log.exception("wait on the backend failed; going on")
            failed = True
        with self._state:
            self._runner_listening = False
            if claim is not None:
                self._held[(claim.queue, claim.task_id)] = claim
                self._slots_waiting += 1
                self._registered = False  # the enqueue that handed it used this worker's entry up
            beside = self._blocked_as == self._beside
        if failed or isinstance(woken, str) or not beside:
            self._poke()  # the broker thread claims, or waits as this worker again
        return claim

    def _taken(self, woken: str | Claim | None) -> Claim | None:
        """What a wait on the backend returned: a task handed to this worker to run, or None."""
        if isinstance(woken, Claim):  # an enqueue leased this task straight to us
            if self._paused or self._stopping.is_set():
                self.backend.release(woken)
                return None
            return woken
        if woken is not None and self._room()[0] == 0:
            self.backend.nudge(woken)  # this token was meant for a worker that will claim
        return None

    def _report_broken(self, queue: str, error: BrokerError) -> None:
        """Log a queue the broker refuses to serve, at most once a minute."""
        now = time.monotonic()
        if now - self._broken.get(queue, -BROKEN_LOG_SECONDS) >= BROKEN_LOG_SECONDS:
            self._broken[queue] = now
            log.error("queue %r cannot be served, skipping it: %s", queue, error)

    # -- heartbeat ----------------------------------------------------------------------------

    def _heartbeat_loop(self) -> None:
        period = self.settings.visibility_timeout / 3
        while not self._idle.wait(period):
            try:
                self.heartbeat()
            except (BackendUnavailable, BrokerError) as exc:  # the backend has logged an outage once
                log.debug("heartbeat failed: %s", exc)
            except Exception:
                log.exception("heartbeat error; going on")

    def heartbeat(self) -> None:
        """Renew the leases of every claim held here and this worker's registration."""
        with self._state:
            by_queue: dict[str, dict[str, int]] = {}
            for claim in self._held.values():
                by_queue.setdefault(claim.queue, {})[claim.task_id] = claim.token
        for name, leases in by_queue.items():
            for task_id in self.backend.renew(name, leases, self.settings.visibility_timeout):
                log.warning("task %s: lease lost (this worker stalled past the visibility timeout)", task_id)
        self._register()

    def _register(self) -> None:
        info = {
            "host": socket.gethostname(),
            "pid": str(os.getpid()),
            "threads": str(self.settings.threads),
            "queues": ",".join(self.settings.queues),
            "running": str(self.running),
        }
        self.backend.register_worker(self.consumer, info, self.settings.visibility_timeout)
