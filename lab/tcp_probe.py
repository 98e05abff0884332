#!/usr/bin/env python3
"""What plain Linux mechanisms tell an application about a failure, for the faultline lab.

  tcp_probe.py serve PORT           an echo server (one thread per connection)
  tcp_probe.py blast HOST PORT      a bulk flow to HOST:PORT (an echo server), for congestion
  tcp_probe.py watch HOST PORT      three observers of HOST:PORT, each printing one JSON line
                                    per event on stdout, with CLOCK_MONOTONIC times in seconds:
    default     an established connection with keepalive at Linux's defaults; one byte sent
                every 500 ms and its echo awaited with no application timeout
    aggressive  the same with keepalive idle 1 s, interval 1 s, 3 probes, and
                TCP_USER_TIMEOUT 3000 ms
    connect     a fresh connect() every 500 ms, with the kernel's own SYN retries as its only
                timeout
  The first line is {"ready": true} once both connections are established. An observer prints
  {"mech": ..., "at": t, "err": ...} when its connection or a connect() fails (connect: with
  "started", when that attempt began). Python, because Node.js does not expose TCP_USER_TIMEOUT
  or the keepalive interval and count.
"""
import json
import select
import socket
import sys
import threading
import time

lock = threading.Lock()


def say(obj):
    with lock:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()


def serve(port):
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", port))
    srv.listen(128)
    say({"listening": port})

    def echo(conn):
        try:
            while True:
                data = conn.recv(4096)
                if not data:
                    return
                conn.sendall(data)
        except OSError:
            return
        finally:
            conn.close()

    while True:
        conn, _ = srv.accept()
        threading.Thread(target=echo, args=(conn,), daemon=True).start()


def established(host, port, aggressive):
    s = socket.create_connection((host, port), timeout=5)
    s.settimeout(None)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    if aggressive:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 1)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 1)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, 3000)
    return s


def ping_loop(mech, s):
    try:
        while True:
            s.sendall(b"x")
            got = s.recv(1)
            if not got:
                say({"mech": mech, "at": time.monotonic(), "err": "EOF"})
                return
            # Between pings, wait on the socket itself: an EOF or reset is seen as it arrives.
            readable, _, _ = select.select([s], [], [], 0.5)
            if readable:
                got = s.recv(1)
                if not got:
                    say({"mech": mech, "at": time.monotonic(), "err": "EOF"})
                    return
    except OSError as e:
        say({"mech": mech, "at": time.monotonic(), "err": errname(e)})


def connect_once(host, port):
    started = time.monotonic()
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.connect((host, port))
    except OSError as e:
        say({"mech": "connect", "at": time.monotonic(), "started": started, "err": errname(e)})
    finally:
        s.close()


def errname(e):
    import errno

    return errno.errorcode.get(e.errno, str(e)) if e.errno else type(e).__name__


def watch(host, port):
    default = established(host, port, False)
    aggressive = established(host, port, True)
    say({"ready": True})
    threading.Thread(target=ping_loop, args=("default", default), daemon=True).start()
    threading.Thread(target=ping_loop, args=("aggressive", aggressive), daemon=True).start()
    while True:
        threading.Thread(target=connect_once, args=(host, port), daemon=True).start()
        time.sleep(0.5)


def blast(host, port):
    """Keep a bulk flow going to HOST:PORT (an echo server) and discard what comes back."""
    s = socket.create_connection((host, port), timeout=5)
    s.settimeout(None)

    def drain():
        while s.recv(65536):
            pass

    threading.Thread(target=drain, daemon=True).start()
    say({"ready": True})
    chunk = b"\0" * 65536
    while True:
        s.sendall(chunk)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "serve":
        serve(int(sys.argv[2]))
    elif len(sys.argv) == 4 and sys.argv[1] == "watch":
        watch(sys.argv[2], int(sys.argv[3]))
    elif len(sys.argv) == 4 and sys.argv[1] == "blast":
        blast(sys.argv[2], int(sys.argv[3]))
    else:
        sys.stderr.write(__doc__)
        sys.exit(2)
