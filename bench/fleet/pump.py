"""Many paho clients driven by one asyncio loop (epoll), after paho's own `loop_asyncio` example.

paho's threaded loop waits with select(), which cannot watch a file descriptor above 1023: a few
hundred clients in one process (three descriptors each) and the rest never get their CONNACK. Here
the loop's reader and writer callbacks call paho's `loop_read`/`loop_write`, a task calls
`loop_misc` each second (keepalive pings), and a lost connection is reconnected after a delay.
Everything that touches a client (connect, publish, disconnect) must run on the loop's thread.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import paho.mqtt.client as mqtt


class AsyncioPump:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.clients: set[mqtt.Client] = set()
        self.stopping = False
        self._misc: asyncio.Task[None] | None = None

    def attach(self, client: mqtt.Client, reconnect_after: Callable[[], float] | None = None) -> None:
        """Drive `client` from the loop; `reconnect_after()` gives the delay after an unplanned loss."""
        client.on_socket_open = lambda c, _u, sock: self.loop.add_reader(sock, c.loop_read)
        client.on_socket_close = lambda _c, _u, sock: self.loop.remove_reader(sock)
        client.on_socket_register_write = lambda c, _u, sock: self.loop.add_writer(sock, c.loop_write)
        client.on_socket_unregister_write = lambda _c, _u, sock: self.loop.remove_writer(sock)
        previous = client.on_disconnect

        def on_disconnect(c, userdata, flags, reason_code, properties) -> None:  # type: ignore[no-untyped-def]
            if previous:
                previous(c, userdata, flags, reason_code, properties)
            if not self.stopping and c in self.clients and reconnect_after is not None:
                self.loop.call_later(reconnect_after(), self._reconnect, c, reconnect_after)

        client.on_disconnect = on_disconnect
        self.clients.add(client)
        if self._misc is None:
            self._misc = self.loop.create_task(self._keepalive())

    def close(self) -> None:
        """Stop the keepalive task (on the loop's thread, once every client has disconnected)."""
        self.stopping = True
        if self._misc is not None:
            self._misc.cancel()

    def detach(self, client: mqtt.Client) -> None:
        self.clients.discard(client)

    def _reconnect(self, client: mqtt.Client, reconnect_after: Callable[[], float]) -> None:
        if self.stopping or client not in self.clients:
            return
        try:
            client.reconnect()
        except OSError:
            self.loop.call_later(reconnect_after(), self._reconnect, client, reconnect_after)

    async def _keepalive(self) -> None:
        while not self.stopping:
            for client in list(self.clients):
                client.loop_misc()
            await asyncio.sleep(1.0)


def drop(client: mqtt.Client) -> None:
    """Cut the TCP connection without DISCONNECT, as a crash would: the broker publishes the will."""
    sock = client.socket()
    if isinstance(sock, socket.socket):
        sock.shutdown(socket.SHUT_RDWR)


__all__ = ["AsyncioPump", "drop"]
