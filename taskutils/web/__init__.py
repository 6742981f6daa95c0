"""The web dashboard (`taskutils web`, extra `taskutils[web]`): fleet, queues, tasks, failures,
workers and schedules in a browser, with the actions of the `taskutils` command.

app.py builds the Starlette app over a backend; pages.py and actions.py are its routes;
security.py guards it; charts.py draws its charts; cli.py serves it with uvicorn.
"""

from .app import create_app
from .cli import serve

__all__ = ["create_app", "serve"]
