"""Checking a scheduler address before a client is made (layer 4).

:func:`check_address` parses an address (``tcp://`` or ``tls://`` only);
:func:`probe_scheduler` asks it who it is, every step under a deadline, so
that a port where nothing listens, an HTTP server or the dashboard port, and
a working scheduler are told apart in one line each
(:class:`ClusterError`), never by a hang. Used by
:func:`crdask.pipeline.cluster.connect`.

Example
-------
>>> check_address("tcp://127.0.0.1:8786")
('tcp://127.0.0.1:8786', 'tcp')
"""

__all__ = ["ClusterError", "check_address", "probe_scheduler"]


class ClusterError(RuntimeError):
    """The Dask cluster could not be started or reached (one line)."""


def check_address(address):
    """``(address, scheme)`` of a scheduler address given by a user (a bare
    ``HOST:PORT`` is ``tcp://``); :class:`ClusterError` in one line if it is
    not an address or names a protocol Dask does not have."""
    from distributed.comm import parse_address

    text = str(address).strip()
    if "://" not in text and ":" not in text:
        raise ClusterError(f"scheduler {address!r}: not an address; "
                           "use tcp://HOST:PORT (e.g. tcp://127.0.0.1:8786)")
    try:
        scheme, _ = parse_address(text if "://" in text else f"tcp://{text}")
    except ValueError as e:
        raise ClusterError(f"scheduler {address!r}: not an address ({e})") from None
    if scheme not in ("tcp", "tls", "inproc", "ws", "wss", "ucx"):
        raise ClusterError(f"scheduler {address!r}: unknown protocol {scheme!r}; "
                           "use tcp:// (or tls:// with a security configuration)")
    return text, scheme


def probe_scheduler(address, where, timeout, security):
    """Ask ``address`` who it is, every step bounded by ``timeout``.

    ``Client(address, timeout=...)`` bounds the TCP connect but not the Dask
    handshake: something that accepts the connection and never answers (an
    HTTP server, the dashboard port) would hang it. A plain ``identity``
    request with our own deadline tells those apart first."""
    import asyncio

    from distributed.comm import connect as comm_connect
    from distributed.comm.addressing import parse_address, parse_host_port

    kw = security.get_connection_args("client") if security is not None else {}
    scheme, location = parse_address(address)

    async def listening():
        if scheme not in ("tcp", "tls"):   # no TCP port to try first
            return
        host, port = parse_host_port(location)
        # Phase 1, a plain TCP connection: a refused port is retried until
        # ``timeout`` (a scheduler may still be starting), as Dask does.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            left = deadline - loop.time()
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(host, port),
                                                   max(left, 0.05))
                writer.close()
                return
            except OSError as e:   # refused, unreachable, or this attempt's deadline
                if loop.time() + 0.25 >= deadline:
                    # a plain OSError (not TimeoutError): "nothing listens"
                    raise OSError(f"{type(e).__name__}: {e}" if str(e)
                                  else type(e).__name__) from None
                await asyncio.sleep(0.25)

    async def ask():
        await listening()
        # Phase 2, something listens: the Dask handshake gets its own deadline
        # (distributed's connect does not bound it: an HTTP server or the
        # dashboard port would hang it).
        async def identity():
            comm = await comm_connect(address, timeout=timeout, **kw)
            try:
                await comm.write({"op": "identity", "reply": True})
                return await comm.read()
            finally:
                comm.abort()
        return await asyncio.wait_for(identity(), timeout)

    try:
        reply = asyncio.run(ask())
    except (asyncio.TimeoutError, TimeoutError):
        raise ClusterError(f"{where}: no Dask scheduler answered within {timeout:g} s; "
                           "is this the scheduler's port (8786), not the dashboard or "
                           "another server?") from None
    except OSError as e:
        raise ClusterError(f"{where}: cannot connect within {timeout:g} s "
                           f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                           "); is a Dask scheduler running there?") from None
    except Exception as e:
        raise ClusterError(f"{where}: not a Dask scheduler ({type(e).__name__}); is this "
                           "the scheduler's port, not the dashboard?") from None
    if not isinstance(reply, dict) or reply.get("type") != "Scheduler":
        what = reply.get("type") if isinstance(reply, dict) else type(reply).__name__
        raise ClusterError(f"{where}: answers, but is a {what}, not a Dask scheduler")
