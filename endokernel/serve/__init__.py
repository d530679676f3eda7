"""``endokernel serve``: the endogenous reward as an HTTP reward server.

Endpoints (app.py): OpenRLHF's ``POST /get_reward``, slime's ``POST /reward``, the native ``POST /score``,
``GET /health`` and ``GET /metrics``. Requests are tokenized (encoding.py) by their protocol's adapter
(protocols.py), queued, and scored together across requests by the batcher (batcher.py) in a worker thread.
One process per device; ``endokernel.serve.ray_serve`` runs the same app as a Ray Serve deployment.

Needs the ``serve`` extra (FastAPI, uvicorn, pydantic, prometheus_client); nothing here is imported by
``import endokernel`` or by the ``endokernel`` command line until ``endokernel serve`` runs.
"""

from .settings import ServerSettings

__all__ = ["ServerSettings", "create_app"]


def __getattr__(name: str):
    # FastAPI loads only when an app is built
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
