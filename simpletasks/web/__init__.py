"""The web service: the job REST API, upload pages and signed result links.

Build the app with :func:`create_app` from a :class:`WebConfig`; ``simpletasks serve``
does that and serves it with waitress. Needs the ``web`` extra (Flask, waitress).
"""

from simpletasks.web.app import WebState, create_app, state
from simpletasks.web.config import PipelineConfig, SmtpConfig, WebConfig, load_pipelines

__all__ = [
    "PipelineConfig",
    "SmtpConfig",
    "WebConfig",
    "WebState",
    "create_app",
    "load_pipelines",
    "state",
]
