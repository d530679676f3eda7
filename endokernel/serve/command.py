"""``endokernel serve``: one reward server (one model, one device) on uvicorn. The model loads before the port is
bound, so that a bad model path fails at once; ``GET /health`` answers once the warm-up batch ran. SIGTERM
(or Ctrl-C) stops accepting connections, answers every request already accepted, and exits with status 0.

No uvicorn workers: each would load its own copy of the model. Scale out with one server per device
(``--device cuda:N --port P``) or with Ray Serve (``endokernel.serve.ray_serve``)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys

import torch

from ..hf.cli_options import add_engine_options, engine_options
from .settings import API_KEY_ENV, DTYPES, ServerSettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = ServerSettings(model="-")
    parser.add_argument("--model", required=True, help="model name or local folder (AutoModelForCausalLM)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 for "
                                                            "every interface)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--dtype", default="auto", choices=DTYPES, help="model dtype (default: the checkpoint's)")
    parser.add_argument("--device", default=None,
                        help="e.g. cuda:1 or cpu (default: cuda when available, else cpu; --engine hf)")
    parser.add_argument("--alpha", type=float, default=defaults.alpha, help="temperature (default 1.0)")
    parser.add_argument("--gamma", type=float, default=defaults.gamma, help="discount (default 0.95)")
    parser.add_argument("--beta", type=float, default=defaults.beta, help="floor of the discount weights (default 0)")
    parser.add_argument("--chat-template", action="store_true",
                        help="format plain-text prompts of /reward and /score that are not rendered yet (do not "
                             "start with the BOS token) as a user turn with the tokenizer's chat template")
    parser.add_argument("--max-batch-tokens", type=int, default=defaults.max_batch_tokens,
                        help=f"most padded tokens (pairs x longest) per forward (default {defaults.max_batch_tokens})")
    parser.add_argument("--max-wait-ms", type=float, default=defaults.max_wait_ms,
                        help=f"longest a pair waits for its batch to fill (default {defaults.max_wait_ms:g})")
    parser.add_argument("--max-queue-tokens", type=int, default=defaults.max_queue_tokens,
                        help="most tokens accepted and not yet answered; past it requests get 503 with Retry-After "
                             f"(default {defaults.max_queue_tokens})")
    parser.add_argument("--max-body-bytes", type=int, default=defaults.max_body_bytes,
                        help=f"largest request body; larger gets 413 unread (default {defaults.max_body_bytes})")
    parser.add_argument("--api-key", default=None,
                        help=f"key required on /get_reward, /reward and /score (default: ${API_KEY_ENV} if set; "
                             "the variable keeps the key out of the process list)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for the model (torch.set_num_threads; default: torch's, one per core). "
                             "Fewer than the cores free when other processes share them: busy threads wait on "
                             "each other's time slices")
    parser.add_argument("--no-batching", dest="batching", action="store_false",
                        help="score one request per forward, as OpenRLHF's serve_rm.py does (a baseline; "
                             "--engine hf)")
    add_engine_options(parser)
    parser.add_argument("--access-log", action="store_true", help="log each request's method, path and status")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


def run(args: argparse.Namespace) -> None:
    try:
        import uvicorn

        from .app import create_app, load_model
    except ImportError as error:
        raise SystemExit(f"endokernel serve needs the serve extra: pip install 'endokernel[serve]' ({error})") from None
    try:
        settings = ServerSettings.with_key_from_environment(
            model=args.model, dtype=args.dtype, device=args.device, alpha=args.alpha, gamma=args.gamma,
            beta=args.beta, chat_template=args.chat_template, max_batch_tokens=args.max_batch_tokens,
            max_wait_ms=args.max_wait_ms, max_queue_tokens=args.max_queue_tokens,
            max_body_bytes=args.max_body_bytes, api_key=args.api_key, batching=args.batching, engine=args.engine,
            **engine_options(args))
    except ValueError as error:
        raise SystemExit(f"endokernel serve: {error}") from None
    if args.threads is not None:
        if args.threads < 1:
            raise SystemExit(f"endokernel serve: --threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s:     %(name)s: %(message)s")
    try:
        model = load_model(settings)
    except (OSError, ValueError) as error:
        raise SystemExit(f"endokernel serve: cannot load {settings.model}: {error}") from None
    # uvicorn drains on SIGTERM or SIGINT, then raises the signal again under the handler found before it
    # started: this one makes that a normal exit (status 0) once every accepted request was answered
    for drained in (signal.SIGTERM, signal.SIGINT):
        signal.signal(drained, lambda *_: sys.exit(0))
    uvicorn.run(create_app(settings, model), host=args.host, port=args.port, log_level=args.log_level,
                access_log=args.access_log)
