"""What every route shares: the backend, the guard, the templates; and rendering a page or its live part."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

from ..backends.base import Backend
from .security import Guard

STOP_POLLING = 286  # htmx: swap this answer in, then poll no more


@dataclass(frozen=True)
class Dashboard:
    """One dashboard's backend, guard and templates, and how long the outcome of a task
    cancelled from it is kept."""

    backend: Backend
    guard: Guard
    templates: Jinja2Templates
    result_ttl: float

    def render(self, request: Request, name: str, context: dict[str, Any], live: bool | None = None) -> Response:
        """A page. A page with a live part (`live` not None: whether it still changes) refreshes
        it every few seconds with htmx: such a refresh gets only `<name>_live.html`, with status
        286 once the part no longer changes, which tells htmx to stop polling."""
        if live is not None and request.headers.get("hx-request"):
            name, status = name.replace(".html", "_live.html"), 200 if live else STOP_POLLING
        else:
            status = 200
        return self.templates.TemplateResponse(request, name, {**context, "live": live}, status_code=status)


def dashboard(request: Request) -> Dashboard:
    """The dashboard serving `request`."""
    return request.app.state.dashboard
