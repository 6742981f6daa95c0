"""Fleet example producer: enqueue 100 tasks onto Redis (TASKUTILS_REDIS_URL) and print who ran them."""

from collections import Counter

from taskutils import Task, TaskHandler

from examples.fleet_tasks import fingerprint

if __name__ == "__main__":
    with TaskHandler(max_num_threads=0) as producer:
        refs = producer.enqueue_tasks(Task(fingerprint, (f"https://example.org/page/{n}",)) for n in range(100))
        results = [ref.result(timeout=60) for ref in refs]
        print("tasks run per worker:", dict(Counter(result["worker"] for result in results)))
