"""The reward server as a Ray Serve application (the ``ray`` extra): the same FastAPI app in every replica, one
model and one batcher per replica (one GPU each where there are GPUs), behind Ray's HTTP proxy, which spreads
requests over the replicas. Launch from a shell:

    serve run endokernel.serve.ray_serve:app_builder model=Qwen/Qwen3-0.6B num_replicas=4

or from Python: ``serve.run(deployment(ServerSettings(model=...), num_replicas=4))``. Batching is ours, per
replica (by padded tokens, across requests), rather than ``@serve.batch`` (by request count): Ray's proxy only
routes. ``max_ongoing_requests`` is raised from Ray's default of 5 so that a replica holds enough concurrent
requests to fill its batches; backpressure is the server's own ``max_queue_tokens`` (503 with Retry-After)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from .settings import ServerSettings

if TYPE_CHECKING:
    from ray.serve import Application

MAX_ONGOING_REQUESTS = 1024  # per replica


def deployment(settings: ServerSettings, *, num_replicas: int = 1, num_gpus: float | None = None,
               name: str = "endokernel") -> Application:
    """A Ray Serve application of ``num_replicas`` reward servers. ``num_gpus``: per replica; default 1 where the
    machine building the application has a CUDA GPU, else 0 (``serve run`` builds it before connecting to Ray:
    on a cluster whose head node has no GPU, pass it). A replica given a GPU sees only that one, as cuda:0."""
    import torch
    from ray import serve

    from .app import create_app

    if isinstance(num_replicas, bool) or not isinstance(num_replicas, int) or num_replicas < 1:
        raise ValueError(f"num_replicas must be a positive int, got {num_replicas!r}")
    if num_gpus is None:
        num_gpus = 1 if torch.cuda.is_available() else 0

    def build():  # runs in each replica: the model loads there, when the app starts
        return create_app(settings)

    ingress = serve.deployment(serve.ingress(build)(), name=name, num_replicas=num_replicas,
                               ray_actor_options={"num_gpus": num_gpus},
                               max_ongoing_requests=MAX_ONGOING_REQUESTS)
    return ingress.bind()


def app_builder(args: dict[str, str]) -> Application:
    """For ``serve run endokernel.serve.ray_serve:app_builder model=... [num_replicas=N num_gpus=G] [setting=value
    ...]``: each ``ServerSettings`` field by name (``max_batch_tokens=16384``, ``chat_template=true``)."""
    args = dict(args)
    replicas = {name: parse(args.pop(name)) for name, parse in (("num_replicas", int), ("num_gpus", float))
                if name in args}
    fields = {field.name: field for field in dataclasses.fields(ServerSettings)}
    unknown = sorted(set(args) - set(fields))
    if unknown:
        raise ValueError(f"unknown arguments {unknown}; expected num_replicas, num_gpus or one of {sorted(fields)}")
    settings = {name: _parse(name, fields[name].type, value) for name, value in args.items()}
    return deployment(ServerSettings.with_key_from_environment(**settings), **replicas)


def _parse(name: str, kind: str, value: str) -> object:
    """A command-line string as the type of the settings field (``from __future__`` annotations are strings)."""
    if kind == "bool":
        if value.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"{name} must be true or false, got {value!r}")
        return value.lower() in ("true", "1")
    if kind in ("int", "int | None"):
        return int(value)
    if kind == "float":
        return float(value)
    return value
