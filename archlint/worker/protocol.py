"""The messages between the client and the worker: JSON objects, each led by its length, over a
Unix stream socket. The request to run carries the client's stdin, stdout, stderr and working
folder as file descriptors (SCM_RIGHTS), so the worker's child writes to the user's terminal
itself and sees the same folder even if its path changed.

    client -> worker   {"op": "run", "protocol", "key", "argv", "prog", "environ", ...} + 4 fds
    worker -> client   {"accepted": true, "key", "pid", "child"}  or  {"accepted": false, "reason"}
    worker -> client   {"exit": status} | {"retry": why} | {"signal": number}   (when the child ends)
    client -> worker   {"op": "cancel"}                            (Ctrl-C in the client)
    client -> worker   {"op": "status"} | {"op": "stop"}           (`archlint worker status|stop`)
"""
from __future__ import annotations

import json
import os
import socket
import struct

_HEADER = struct.Struct("!I")
_LIMIT = 16 << 20  # no message comes near this; a larger length is a corrupt stream


class ProtocolError(Exception):
    """The other side sent something that is not a message, or hung up mid-way."""


def send(sock: socket.socket, message: dict, fds: list[int] | tuple[int, ...] = ()) -> None:
    data = json.dumps(message).encode("utf-8")
    payload = _HEADER.pack(len(data)) + data
    if fds:
        # The descriptors ride on the first bytes sent; the rest follows as plain data.
        sent = socket.send_fds(sock, [payload], list(fds))
        if sent < len(payload):
            sock.sendall(payload[sent:])
    else:
        sock.sendall(payload)


class Reader:
    """Reads messages from one connection, keeping what arrived beyond the current one."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buffer = bytearray()
        self.fds: list[int] = []  # descriptors received and not yet taken

    def _fill(self, want_fds: bool) -> bool:
        """Read what is there (blocking per the socket's timeout); False at end of stream."""
        if want_fds:
            data, fds, flags, _ = socket.recv_fds(self.sock, 1 << 16, 8)
            if flags & getattr(socket, "MSG_CTRUNC", 0):
                for fd in fds:
                    os.close(fd)
                raise ProtocolError("file descriptors were cut off")
            self.fds.extend(fds)
        else:
            data = self.sock.recv(1 << 16)
        if not data:
            return False
        self.buffer += data
        return True

    def pending(self) -> dict | None:
        """The next whole message already read, or None."""
        if len(self.buffer) < _HEADER.size:
            return None
        (length,) = _HEADER.unpack(bytes(self.buffer[:_HEADER.size]))
        if length > _LIMIT:
            raise ProtocolError(f"a message of {length} bytes")
        if len(self.buffer) < _HEADER.size + length:
            return None
        data = bytes(self.buffer[_HEADER.size:_HEADER.size + length])
        del self.buffer[:_HEADER.size + length]
        try:
            message = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise ProtocolError(f"not a JSON message ({exc})") from None
        if not isinstance(message, dict):
            raise ProtocolError("a message that is not a JSON object")
        return message

    def receive(self, want_fds: bool = False) -> dict | None:
        """The next message, reading as needed; None if the other side closed first."""
        while True:
            message = self.pending()
            if message is not None:
                return message
            if not self._fill(want_fds):
                if self.buffer:
                    raise ProtocolError("the connection closed mid-message")
                return None

    def feed(self, want_fds: bool = False) -> bool:
        """One non-blocking read for a select loop; False when the other side has closed."""
        try:
            return self._fill(want_fds)
        except (BlockingIOError, InterruptedError):
            return True

    def take_fds(self) -> list[int]:
        fds, self.fds = self.fds, []
        return fds

    def close_fds(self) -> None:
        for fd in self.take_fds():
            try:
                os.close(fd)
            except OSError:
                pass


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end, from the kernel (SO_PEERCRED)."""
    data = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", data)
