"""The bench clients' SMTP reply reader (ban_flood.py, tls_bench.py)."""


def read_reply(sock, buf=b""):
    """Reads one complete SMTP reply (possibly multi-line); returns (code, rest)."""
    while True:
        while b"\r\n" in buf:
            line, buf = buf.split(b"\r\n", 1)
            if len(line) < 4 or line[3:4] != b"-":
                return line[:3].decode("ascii", "replace"), buf
        d = sock.recv(4096)
        if not d:
            raise ConnectionError("EOF before reply")
        buf += d
