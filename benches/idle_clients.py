#!/usr/bin/env python3
"""Opens N TLS client connections to 127.0.0.1:PORT, sends one keep-alive GET on each, reads its
response, then keeps every connection open and idle until stdin closes or gives a line.

    idle_clients.py PORT N

Prints "ready N" once all N connections have had their answer (a failed connection or a
non-2xx answer stops it with exit 1), so that the caller can read the server's memory with N
idle connections. Used by benches/load.sh; on 127.0.0.1 only.
"""

import socket
import ssl
import sys


def one(ctx, port):
    raw = socket.create_connection(("127.0.0.1", port), timeout=30)
    conn = ctx.wrap_socket(raw, server_hostname="localhost")
    conn.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: idle-clients\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(16384)
        if not chunk:
            raise ConnectionError("closed before the response head")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = head.split(b" ", 2)[1]
    if not status.startswith(b"2"):
        raise ConnectionError(f"status {status.decode()}")
    length = None
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    if length is None:
        raise ConnectionError("no content-length in the response")
    while len(body) < length:
        chunk = conn.recv(16384)
        if not chunk:
            raise ConnectionError("closed in the response body")
        body += chunk
    return conn


def main():
    port, n = int(sys.argv[1]), int(sys.argv[2])
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    conns = []
    for i in range(n):
        try:
            conns.append(one(ctx, port))
        except (OSError, ConnectionError, ValueError, IndexError) as e:
            print(f"connection {i + 1} of {n}: {e}", file=sys.stderr, flush=True)
            sys.exit(1)
    print(f"ready {len(conns)}", flush=True)
    sys.stdin.readline()
    for c in conns:
        c.close()


if __name__ == "__main__":
    main()
