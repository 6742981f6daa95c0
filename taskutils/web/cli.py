"""`taskutils web` (its options are in admin_cli.py): the bind rule, then the dashboard served with uvicorn."""

from __future__ import annotations

import os
import sys

import uvicorn

from ..backends.redis import RedisBackend
from ..config import DEFAULT_REDIS_URL, Settings
from ..http_endpoints import parse_address
from .app import create_app
from .security import check_bind

TOKEN_VARIABLE = "TASKUTILS_WEB_TOKEN"


def serve(settings: Settings, bind: str, token: str | None, read_only: bool) -> int:
    """Serve until interrupted; 2 for a bad or refused --bind, 0 after a clean stop."""
    token = token or os.environ.get(TOKEN_VARIABLE) or None
    try:
        host, port = parse_address(bind)
        check_bind(host, token)
    except ValueError as exc:
        print(f"taskutils web: {exc}", file=sys.stderr)
        return 2
    backend = RedisBackend.from_url(settings.redis_url or DEFAULT_REDIS_URL, settings.broker_timeout)
    app = create_app(backend, token=token, read_only=read_only, result_ttl=settings.result_ttl)
    shown = f"[{host}]" if ":" in host else host
    print(f"taskutils web: serving http://{shown}:{port}/{' (read-only)' if read_only else ''}", file=sys.stderr)
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        backend.close()
    return 0
