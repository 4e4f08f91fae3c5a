"""``python -m airflow_provider_openai_batch.emulator`` / ``openai-batch-emulator``: run the emulator.

Prints exactly one line, ``OPENAI_BASE_URL=http://HOST:PORT/v1``, once the server accepts connections.
The settings flags come from :class:`~.settings.Settings`; the others say where and how to serve.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import tempfile
from pathlib import Path

from .faults import parse_fault_spec
from .settings import Settings, add_setting_flags, settings_from_args


def build_parser() -> argparse.ArgumentParser:
    """The command line: server flags, ``--fault``, and one flag per setting."""
    parser = argparse.ArgumentParser(
        prog="openai-batch-emulator", description="Local emulator of the OpenAI Files + Batch API."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument(
        "--data-dir", type=Path, help="where file bytes live (default: a temporary directory)"
    )
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="METHOD:PATH:KIND[:key=value...]",
        help="arm a fault at start, e.g. POST:/v1/batches:429:times=1:retry_after=1 (repeatable)",
    )
    parser.add_argument("--log-level", default="warning", help="uvicorn log level (default: warning)")
    add_setting_flags(parser)
    return parser


async def _serve(args: argparse.Namespace, settings: Settings, data_dir: Path) -> None:
    import uvicorn

    from .app import create_app

    app = create_app(settings, data_dir)
    for spec in args.fault:
        app.emulator.faults.add(parse_fault_spec(spec))
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # asyncio only sets TCP_NODELAY on sockets made with proto=IPPROTO_TCP, which this one (and the
    # connections it accepts, which inherit the option) is not; without it every kept-alive request waits
    # ~40 ms for a delayed ACK (Nagle holding the body behind the headers).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((args.host, args.port))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level=args.log_level, access_log=False, timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started and not task.done():  # noqa: ASYNC110 - uvicorn only offers a flag
        await asyncio.sleep(0.01)
    if server.started:
        host = f"[{args.host}]" if family == socket.AF_INET6 else args.host
        print(f"OPENAI_BASE_URL=http://{host}:{port}/v1", flush=True)
    await task


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from_args(args)
        for spec in args.fault:
            parse_fault_spec(spec)
    except ValueError as exc:  # SettingsError included
        print(f"openai-batch-emulator: {exc}", file=sys.stderr)
        return 2
    if args.data_dir is not None:
        asyncio.run(_serve(args, settings, args.data_dir))
    else:
        with tempfile.TemporaryDirectory(prefix="openai-emulator-") as tmp:
            asyncio.run(_serve(args, settings, Path(tmp)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
