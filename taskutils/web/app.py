"""The dashboard as a Starlette app: `create_app` wires the pages, the actions, the templates,
the static files and the guard around one backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import jinja2
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from ..backends.base import Backend
from ..errors import BackendUnavailable, BrokerError
from . import actions, formatting, pages
from .dashboard import Dashboard, dashboard
from .security import Guard, GuardMiddleware

HERE = Path(__file__).parent
MAX_BODY = 64 * 1024  # bytes of a request body: forms here hold a few ids and names


def create_app(backend: Backend, *, token: str | None = None, read_only: bool = False,
               result_ttl: float = 3600.0) -> Starlette:
    """The dashboard over `backend`. With a token every request must carry it; read-only hides
    every action and refuses every POST; `result_ttl`: seconds a cancelled task's outcome is kept."""
    guard = Guard(token, read_only)
    templates = Jinja2Templates(env=_environment(), context_processors=[_common(guard)])
    app = Starlette(
        routes=[*pages.ROUTES, *actions.ROUTES, Mount("/static", StaticFiles(directory=HERE / "static"), name="static")],
        middleware=[Middleware(GuardMiddleware, guard=guard)],
        exception_handlers={404: _not_found, BackendUnavailable: _unavailable, BrokerError: _unavailable},
        max_body_size=MAX_BODY,
    )
    app.state.dashboard = Dashboard(backend, guard, templates, result_ttl)
    return app


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True, undefined=jinja2.StrictUndefined,
        trim_blocks=True, lstrip_blocks=True,
    )
    env.filters.update(moment=formatting.moment, duration=formatting.duration, shorten=formatting.shorten,
                       value=formatting.value, path=formatting.path_part,
                       breakable=formatting.breakable)
    env.globals.update(relative=formatting.relative, call=formatting.call, limit_text=formatting.limit_text)
    return env


def _common(guard: Guard) -> Callable[[Request], dict[str, Any]]:
    """What every template reads: the CSRF token, whether the dashboard is read-only, the flash."""

    def common(request: Request) -> dict[str, Any]:
        query = request.query_params
        return {
            "csrf_token": guard.csrf_token,
            "read_only": guard.read_only,
            "flash": guard.flashed(query.get("msg"), query.get("sig")),
        }

    return common


async def _not_found(request: Request, exc: Exception) -> Response:
    detail = exc.detail if isinstance(exc, HTTPException) else "Not found"
    return dashboard(request).templates.TemplateResponse(
        request, "message.html", {"title": "Not found", "detail": detail}, status_code=404
    )


async def _unavailable(request: Request, exc: Exception) -> Response:
    return dashboard(request).templates.TemplateResponse(
        request, "message.html", {"title": "The broker cannot be reached", "detail": str(exc)}, status_code=503
    )
