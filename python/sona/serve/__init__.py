"""``sona serve``: an OpenAI-compatible gateway that routes each chat request to a tier.

:func:`load_config` reads and validates the TOML file, :func:`create_app` builds the ASGI app,
:func:`serve` runs it under uvicorn. See ``docs/serving.md``.
"""

from __future__ import annotations

import argparse
import logging

from sona.serve.config import GatewayConfig, load_config, parse_config

__all__ = [
    "GatewayConfig",
    "add_arguments",
    "create_app",
    "load_config",
    "parse_config",
    "run",
    "serve",
]


def create_app(config: GatewayConfig, **kwargs: object):  # type: ignore[no-untyped-def]
    """The gateway's ASGI app (see :func:`sona.serve.app.create_app`)."""
    from sona.serve.app import create_app as _create

    return _create(config, **kwargs)  # type: ignore[arg-type]


def serve(config: GatewayConfig, host: str | None = None, port: int | None = None) -> None:
    """Run the gateway under uvicorn until interrupted (one write per response and the start-up
    heap frozen for the GC: :mod:`sona.serve.server`)."""
    import uvicorn

    from sona.serve.app import create_app as _create
    from sona.serve.server import tune_gc, uvicorn_options

    level = config.server.log_level
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    app = _create(config)
    tune_gc()
    uvicorn.run(
        app,
        host=host or config.server.host,
        port=config.server.port if port is None else port,
        log_level=level,
        **uvicorn_options(),
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``sona serve``."""
    parser.add_argument("--config", required=True, help="TOML configuration file (docs/serving.md)")
    parser.add_argument("--host", default=None, help="override server.host")
    parser.add_argument("--port", type=int, default=None, help="override server.port")
    parser.add_argument("--check", action="store_true", help="validate the configuration and exit")


def run(args: argparse.Namespace) -> int:
    """``sona serve`` entry point."""
    config = load_config(args.config)
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        print(f"sona serve needs the serve extra (pip install 'sona[serve]'): {exc}")
        return 2
    if args.check:
        names = ", ".join(t.name for t in config.tiers)
        print(
            f"configuration OK: {len(config.tiers)} tier(s) ({names}), "
            f"{len(config.profiles)} profile(s), {len(config.tenants)} tenant(s)"
        )
        return 0
    serve(config, args.host, args.port)
    return 0
