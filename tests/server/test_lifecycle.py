"""Lifespan, graceful shutdown, readiness, unix sockets, TLS and proxy headers."""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from tests.server import apps
from websockets.exceptions import ConnectionClosed

from kanal.exceptions import LifespanError
from kanal.server import Config, Server


def lifespan_app(events: list[str], *, fail: bool = False) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                events.append(message["type"])
                if message["type"] == "lifespan.startup":
                    if fail:
                        await send({"type": "lifespan.startup.failed", "message": "no database"})
                        return
                    scope["state"]["pool"] = "the pool"
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        else:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": scope["state"]["pool"].encode()})

    return app


async def test_lifespan_startup_state_and_shutdown() -> None:
    events: list[str] = []
    server = Server(Config(app=lifespan_app(events), port=0))
    await server.start()
    assert events == ["lifespan.startup"]
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{server.port}/")
    assert response.text == "the pool"
    await server.shutdown()
    assert events == ["lifespan.startup", "lifespan.shutdown"]


async def test_lifespan_startup_failure_stops_the_start() -> None:
    server = Server(Config(app=lifespan_app([], fail=True), port=0))
    with pytest.raises(LifespanError, match="no database"):
        await server.start()
    assert server.sockets == []


async def test_app_without_lifespan_is_tolerated(caplog: pytest.LogCaptureFixture) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http", "only http here"
        await apps.hello(scope, receive, send)

    server = Server(Config(app=app, port=0))
    with caplog.at_level(logging.INFO, logger="kanal.server"):
        await server.start()
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"http://127.0.0.1:{server.port}/")).status_code == 200
    await server.shutdown()
    assert "does not support lifespan" in caplog.text


async def test_shutdown_lets_inflight_responses_finish_and_refuses_new_ones() -> None:
    gate = asyncio.Event()
    started = asyncio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        started.set()
        await gate.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"finished"})

    server = Server(Config(app=app, port=0, timeout_graceful_shutdown=10))
    await server.start()
    port = server.port
    async with httpx.AsyncClient() as client:
        request = asyncio.create_task(client.get(f"http://127.0.0.1:{port}/"))
        await asyncio.wait_for(started.wait(), 5)
        stopping = asyncio.create_task(server.shutdown())
        await asyncio.sleep(0)  # one step of shutdown(): it closes the listener first
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", port)
        gate.set()
        response = await asyncio.wait_for(request, 5)
        await asyncio.wait_for(stopping, 5)
    assert response.text == "finished"
    assert response.headers["connection"] == "close"


async def test_shutdown_closes_websockets_with_1001() -> None:
    codes: list[int] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()
        await send({"type": "websocket.accept"})
        codes.append((await receive())["code"])

    server = Server(Config(app=app, port=0))
    await server.start()
    async with websockets.connect(f"ws://127.0.0.1:{server.port}/") as ws:
        await server.shutdown()
        with pytest.raises(ConnectionClosed) as info:
            await ws.recv()
    assert info.value.rcvd is not None and info.value.rcvd.code == 1001
    assert codes == [1001]


async def test_shutdown_cancels_stuck_tasks_and_says_where_they_waited(
    caplog: pytest.LogCaptureFixture,
) -> None:
    never = asyncio.Event()
    started = asyncio.Event()

    async def stuck_here(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        started.set()
        await never.wait()

    server = Server(Config(app=stuck_here, port=0, timeout_graceful_shutdown=0.2))
    await server.start()
    _, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /stuck HTTP/1.1\r\nHost: x\r\n\r\n")
    await asyncio.wait_for(started.wait(), 5)
    with caplog.at_level(logging.WARNING, logger="kanal.server"):
        await server.shutdown()
    assert "cancelled the application task for /stuck" in caplog.text
    assert "in stuck_here" in caplog.text
    assert "test_lifecycle.py" in caplog.text
    writer.close()


async def test_serve_until_asked_and_ready_file(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    server = Server(Config(app=apps.hello, port=0, ready_file=str(ready)))
    serving = asyncio.create_task(server.serve())
    await asyncio.wait_for(server.started.wait(), 5)
    assert ready.exists()
    assert str(os.getpid()) in ready.read_text()
    server.request_shutdown()
    await asyncio.wait_for(serving, 5)
    assert not ready.exists()


async def test_unix_domain_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "kanal.sock")
    server = Server(Config(app=apps.hello, uds=path))
    await server.start()
    try:
        transport = httpx.AsyncHTTPTransport(uds=path)
        async with httpx.AsyncClient(transport=transport) as client:
            response = await client.get("http://localhost/")
        assert response.text == "Hello, world!"
        assert server.port == 0
    finally:
        await server.shutdown()
    assert not await asyncio.to_thread(os.path.exists, path)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1, made with the cryptography package."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    directory = tmp_path_factory.mktemp("tls")
    certfile, keyfile = directory / "cert.pem", directory / "key.pem"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(certfile), str(keyfile)


async def test_tls_https_and_wss(serve: Any, certificate: tuple[str, str]) -> None:
    certfile, keyfile = certificate
    server = await serve(apps.scope_echo, ssl_certfile=certfile, ssl_keyfile=keyfile)
    context = ssl.create_default_context(cafile=certfile)
    async with httpx.AsyncClient(verify=context) as client:
        response = await client.get(f"https://127.0.0.1:{server.port}/secure")
    assert response.json()["scheme"] == "https"

    echo = await serve(apps.hello, ssl_certfile=certfile, ssl_keyfile=keyfile)
    async with websockets.connect(f"wss://127.0.0.1:{echo.port}/", ssl=context) as ws:
        await ws.send("over tls")
        assert await ws.recv() == "over tls"


async def test_proxy_headers_from_trusted_peers_only(serve: Any) -> None:
    headers = {"X-Forwarded-For": "203.0.113.7, 10.0.0.1", "X-Forwarded-Proto": "https"}
    trusted = await serve(
        apps.scope_echo, proxy_headers=True, forwarded_allow_ips="127.0.0.1, 10.0.0.0/8"
    )
    untrusted = await serve(apps.scope_echo, proxy_headers=True, forwarded_allow_ips="10.1.1.1")
    async with httpx.AsyncClient() as client:
        seen = (await client.get(f"http://127.0.0.1:{trusted.port}/", headers=headers)).json()
        plain = (await client.get(f"http://127.0.0.1:{untrusted.port}/", headers=headers)).json()
    assert seen["client"][0] == "203.0.113.7"
    assert seen["scheme"] == "https"
    assert plain["client"][0] == "127.0.0.1"
    assert plain["scheme"] == "http"
