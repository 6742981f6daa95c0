"""The 2016 README example in Python 3: runs embedded, or on Redis if TASKUTILS_REDIS_URL is set."""

import time

from taskutils import LockWrapper, Recurrent, Task, TaskHandler

with_a_lock = LockWrapper()


def foo(k):
    print(f"hello world from task {k}")


@with_a_lock
def f():
    print("a")


@with_a_lock
def g():
    print("b")


if __name__ == "__main__":
    task_handler = TaskHandler(max_num_threads=3, sleep_seconds=2)

    for k in range(10):
        task = Task(foo, kwargs=dict(k=k), priority=k, repeats_on_failure=3)
        task_handler.enqueue_task(task)

    task = Task(foo, kwargs=dict(k=10), repeats_on_failure=0)
    task_handler.recurrent_tasks["abc"] = Recurrent(task, interval=0.5, repeats=5)

    task_handler.enqueue_task(Task(f))
    task_handler.enqueue_task(Task(g))

    while "abc" in task_handler.recurrent_tasks:  # the schedule removes itself after 5 runs
        time.sleep(0.1)
    task_handler.join()
    task_handler.close()
