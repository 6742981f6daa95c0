"""Start real taskutils-worker processes, as a user would, and wait for them to be up."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def worker_command() -> str:
    found = shutil.which("taskutils-worker", path=str(Path(sys.executable).parent)) or shutil.which("taskutils-worker")
    if not found:
        raise RuntimeError("taskutils-worker is not installed: pip install -e '.[test]'")
    return found


class WorkerProcess:
    """One taskutils-worker; its log goes to a file the test can read."""

    def __init__(self, redis_url: str, *args: str, env: dict[str, str] | None = None, record_url: str | None = None,
                 python_prelude: str | None = None):
        self.log_path = Path(tempfile.mkstemp(prefix="taskutils-worker-", suffix=".log")[1])
        env = {k: v for k, v in os.environ.items() if k != "TASKUTILS_REDIS_URL"} | (env or {})
        env |= {"TASKUTILS_TEST_RECORD_URL": record_url or redis_url, "PYTHONPATH": str(ROOT)}
        arguments = ["--redis-url", redis_url, *(args or ("--import", "tests.fleet_tasks"))]
        if python_prelude:  # run the worker's own main() after some test set-up (e.g. a shifted clock)
            script = f"{python_prelude}\nimport sys\nfrom taskutils.cli import main\nsys.exit(main({arguments!r}))"
            command = [sys.executable, "-c", script]
        else:
            command = [worker_command(), *arguments]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.wait_for_log("started")

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log:
            if self.process.poll() is not None:
                raise AssertionError(f"worker exited with {self.process.returncode}:\n{self.log}")
            if time.monotonic() > deadline:
                raise AssertionError(f"worker log has no {text!r} after {timeout}s:\n{self.log}")
            time.sleep(0.02)

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = 30) -> int:
        return self.process.wait(timeout)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def state(self) -> str:
        """The process's state letter from /proc (R running, S sleeping, T stopped, ...)."""
        with open(f"/proc/{self.pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0]

    def kill(self) -> None:
        """SIGKILL this process, and the worker processes it started if it is a supervisor
        (they run in sessions of their own)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
        for pid in re.findall(r"worker process (\d+) started", self.log):
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
