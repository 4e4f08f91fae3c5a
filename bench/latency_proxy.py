"""A TCP proxy that makes each HTTP request wait, as a real network's round trip does.

    python bench/latency_proxy.py --target 127.0.0.1:5000 [--delay 0.02]

Prints ``PROXY_URL=http://127.0.0.1:<port>`` once listening. On each connection, the first bytes the client
sends after the server last answered (a new request on a kept-alive connection, or a body after ``100
Continue``) are held for ``--delay`` seconds before they go on; the bytes in between flow at full speed. So
a request costs one round trip more, as on a network with that latency, and a large body is not slowed.
"""

from __future__ import annotations

import argparse
import asyncio


async def _pipe(
    src: asyncio.StreamReader,
    dst: asyncio.StreamWriter,
    state: dict[str, bool],
    *,
    upstream: bool,
    delay: float,
) -> None:
    try:
        while data := await src.read(256 * 1024):
            if upstream and state["fresh"]:
                state["fresh"] = False
                await asyncio.sleep(delay)
            elif not upstream:
                state["fresh"] = True
            dst.write(data)
            await dst.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        try:
            dst.close()
        except Exception:
            pass


async def serve(target_host: str, target_port: int, delay: float, port: int = 0) -> None:
    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(target_host, target_port)
        except OSError:
            client_w.close()
            return
        state = {"fresh": True}
        await asyncio.gather(
            _pipe(client_r, server_w, state, upstream=True, delay=delay),
            _pipe(server_r, client_w, state, upstream=False, delay=delay),
        )

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    print(f"PROXY_URL=http://127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True, help="host:port to forward to")
    parser.add_argument("--delay", type=float, default=0.02, help="seconds added to each request")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    host, _, port = args.target.rpartition(":")
    asyncio.run(serve(host, int(port), args.delay, args.port))


if __name__ == "__main__":
    main()
