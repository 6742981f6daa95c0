"""The runner pacer, driven with a fake clock: when runners park, when they take claims again."""

from __future__ import annotations

from taskutils.pacing import MIN_ACTIVE, STALL_SECONDS, WINDOW_SECONDS, RunnerPacer


class FakeCpu:
    """A process CPU clock that runs at `use` CPU seconds per wall second of the test's clock `now`."""

    def __init__(self, use: float):
        self.use, self.now = use, 0.0
        self._spent, self._read_at = 0.0, 0.0

    def __call__(self) -> float:
        self._spent += (self.now - self._read_at) * self.use
        self._read_at = self.now
        return self._spent


def run_windows(pacer: RunnerPacer, cpu: FakeCpu, windows: int, backlog: bool = True, tasks: int = 1) -> list[tuple[bool, bool]]:
    """Runner 0 finishes `tasks` tasks in each window, the last one as the window (a window and
    a half long) ends; returns what the pacer said after that last task of each."""
    said = []
    for _ in range(windows):
        for task in range(tasks):
            pacer.started(0, cpu.now)
            cpu.now += WINDOW_SECONDS * 1.5 if task == tasks - 1 else 0.0
            outcome = pacer.finished(0, cpu.now, backlog)
            if outcome[0]:  # parked: the test lets it resume at once, to keep one runner finishing tasks
                pacer.resumed()
        said.append(outcome)
    return said


def test_a_saturated_process_takes_claims_on_fewer_runners_down_to_two():
    cpu = FakeCpu(use=1.0)
    pacer = RunnerPacer(8, cpu_seconds=cpu)
    run_windows(pacer, cpu, 3)
    assert pacer.target == 6  # the first window opens the count, each later one takes a runner off
    run_windows(pacer, cpu, 20)
    assert pacer.target == MIN_ACTIVE
    pacer.started(0, cpu.now)
    assert pacer.finished(0, cpu.now, backlog=True) == (True, False)  # eight take claims, two may: it parks
    assert pacer.parked == 1


def saturated_four(running: list[int]) -> tuple[RunnerPacer, FakeCpu, list[bool]]:
    """A pacer of four runners brought down to two by a saturated CPU; then every runner starts a
    task and those not in `running` finish it. Returns the pacer, its clock and who parked."""
    cpu = FakeCpu(use=1.0)
    pacer = RunnerPacer(4, cpu_seconds=cpu)
    run_windows(pacer, cpu, 4)
    assert pacer.target == 2
    for runner in range(4):
        pacer.started(runner, cpu.now)
    parks = [pacer.finished(runner, cpu.now, backlog=True)[0] for runner in range(4) if runner not in running]
    return pacer, cpu, parks


def test_runners_park_until_only_the_target_takes_claims():
    pacer, _, parks = saturated_four(running=[])
    assert parks == [True, True, False, False]
    assert pacer.parked == 2


def test_an_underused_process_with_claims_waiting_wakes_a_parked_runner():
    pacer, cpu, _ = saturated_four(running=[])
    cpu.use = 0.3  # the tasks now wait on I/O
    assert run_windows(pacer, cpu, 1, backlog=False) == [(False, False)]
    assert pacer.target == 2  # nothing waits: no reason for more runners
    assert run_windows(pacer, cpu, 1, backlog=True) == [(False, True)]
    assert pacer.target == 3


def test_stalled_tasks_do_not_hold_back_the_claims_behind_them():
    pacer, cpu, parks = saturated_four(running=[0, 1])
    assert parks == [True, True]  # runners 0 and 1 still run their tasks
    stalled = cpu.now + STALL_SECONDS * 1.5
    assert not pacer.may_resume(cpu.now + STALL_SECONDS / 2, backlog=True)
    assert not pacer.may_resume(stalled, backlog=False)  # stalled, but nothing waits
    assert pacer.may_resume(stalled, backlog=True)
    pacer.resumed()
    pacer.started(2, stalled)
    assert pacer.may_resume(stalled, backlog=True)  # one fresh runner of the two allowed
    pacer.resumed()
    pacer.started(3, stalled)
    assert not pacer.may_resume(stalled, backlog=True)  # two fresh: enough


def test_a_pacer_of_two_threads_never_parks():
    cpu = FakeCpu(use=1.0)
    pacer = RunnerPacer(MIN_ACTIVE, cpu_seconds=cpu)
    assert run_windows(pacer, cpu, 10) == [(False, False)] * 10
    assert pacer.target == MIN_ACTIVE


def test_an_idle_worker_starts_again_on_every_runner():
    pacer, cpu, _ = saturated_four(running=[])
    pacer.resumed()
    assert pacer.target == 2
    pacer.resumed()  # the worker wakes its parked runners when it starts over
    pacer.start_over()
    assert (pacer.target, pacer.parked) == (4, 0)
    assert run_windows(pacer, cpu, 1) == [(False, False)]  # a fresh window: nothing measured yet


def test_a_step_down_that_costs_tasks_is_undone_and_not_tried_again():
    cpu = FakeCpu(use=1.0)
    pacer = RunnerPacer(4, cpu_seconds=cpu)
    run_windows(pacer, cpu, 1, tasks=10)  # the first task opens the window, the last ends it
    assert pacer.target == 3
    cpu.use = 0.8  # one runner fewer: no longer saturated ...
    run_windows(pacer, cpu, 1, tasks=5)  # ... and half the tasks done: undone
    assert (pacer.target, pacer.floor) == (4, 4)
    cpu.use = 1.0
    run_windows(pacer, cpu, 3, tasks=10)
    assert pacer.target == 4  # saturated again, but it goes no lower


def test_a_step_down_that_keeps_the_task_rate_stays():
    cpu = FakeCpu(use=1.0)
    pacer = RunnerPacer(4, cpu_seconds=cpu)
    run_windows(pacer, cpu, 1, tasks=10)
    cpu.use = 0.8  # no longer saturated, but as many tasks done: fewer runners cost nothing
    assert [wake for _, wake in run_windows(pacer, cpu, 3, tasks=10)] == [False] * 3
    assert (pacer.target, pacer.floor) == (3, MIN_ACTIVE)


class FakePin:
    """Records pinning; `free`: whether a CPU is free to pin to."""

    def __init__(self, free: bool = True):
        self.free, self.pinned, self.tries = free, False, 0

    def pin(self) -> bool:
        self.tries += 1
        self.pinned = self.free
        return self.free

    def unpin(self) -> None:
        self.pinned = False


def pinned_pacer(threads: int = 4, pin: FakePin | None = None) -> tuple[RunnerPacer, FakeCpu, FakePin]:
    cpu, pin = FakeCpu(use=1.0), pin or FakePin()
    return RunnerPacer(threads, cpu_seconds=cpu, pin=pin), cpu, pin


def test_a_saturated_worker_keeps_to_one_cpu_before_it_parks_runners():
    pacer, cpu, pin = pinned_pacer()
    run_windows(pacer, cpu, 1, tasks=10)  # the first task opens the window, the last ends it saturated
    assert pin.pinned and pacer.pinned
    assert pacer.target == 4  # pinning was this window's step
    run_windows(pacer, cpu, 1, tasks=10)
    assert pacer.target == 3 and pin.pinned  # as many tasks: pinned it stays, and the runners come next


def test_a_pacer_of_two_threads_still_pins():
    pacer, cpu, pin = pinned_pacer(threads=MIN_ACTIVE)
    run_windows(pacer, cpu, 2)
    assert pin.pinned and pacer.target == MIN_ACTIVE


def test_pinning_that_costs_tasks_is_undone_until_the_worker_is_idle():
    pacer, cpu, pin = pinned_pacer()
    run_windows(pacer, cpu, 1, tasks=10)
    assert pin.pinned
    run_windows(pacer, cpu, 1, tasks=5)  # half the tasks on one CPU: they ran side by side before
    assert not pin.pinned and not pacer.pinned
    run_windows(pacer, cpu, 5, tasks=10)
    assert not pin.pinned and pin.tries == 1  # not tried again while the work goes on
    pacer.start_over()
    run_windows(pacer, cpu, 1, tasks=10)
    assert pin.pinned and pin.tries == 2  # the next work is measured afresh


def test_a_process_using_more_than_one_core_is_never_pinned():
    pacer, cpu, pin = pinned_pacer()
    cpu.use = 1.9  # its tasks run outside the interpreter lock, on both CPUs
    run_windows(pacer, cpu, 5, tasks=10)
    assert pin.tries == 0
    assert pacer.target < 4  # it still parks runners (the undo rule guards that)


def test_no_free_cpu_is_not_looked_for_again_until_idle():
    pacer, cpu, pin = pinned_pacer(pin=FakePin(free=False))
    run_windows(pacer, cpu, 6, tasks=10)
    assert pin.tries == 1 and not pacer.pinned
    assert pacer.target == MIN_ACTIVE  # the runners still step down


def test_an_idle_worker_lets_its_threads_run_on_every_cpu_again():
    pacer, cpu, pin = pinned_pacer()
    run_windows(pacer, cpu, 2)
    assert pin.pinned
    pacer.start_over()
    assert not pin.pinned and not pacer.pinned


def test_a_pin_is_judged_in_the_first_window_with_claims_waiting():
    pacer, cpu, pin = pinned_pacer()
    run_windows(pacer, cpu, 1, tasks=10)
    assert pin.pinned
    run_windows(pacer, cpu, 1, backlog=False, tasks=2)  # nothing waits: says nothing of the pin
    assert pin.pinned
    run_windows(pacer, cpu, 1, tasks=5)
    assert not pin.pinned


class BrokenPin(FakePin):
    def pin(self) -> bool:
        self.tries += 1
        raise OSError("Invalid argument")


def test_a_pin_that_raises_leaves_the_runner_alive_and_is_not_tried_again_until_idle():
    pacer, cpu, pin = pinned_pacer(pin=BrokenPin())
    run_windows(pacer, cpu, 6, tasks=10)  # would raise out of finished() if it escaped
    assert pin.tries == 1 and not pacer.pinned
    assert pacer.target == MIN_ACTIVE
