"""Loaded by the Python of subprocesses the tests start (the Azure CLI): refuses to resolve or
connect to anything but loopback, so no request can reach 169.254.169.254 or a real Azure host."""
import socket

_LOOPBACK = {"127.0.0.1", "localhost", "::1"}
_real_getaddrinfo = socket.getaddrinfo
_real_connect = socket.socket.connect


def _guarded_getaddrinfo(host, *args, **kwargs):
    h = host.decode() if isinstance(host, bytes) else host
    if h is not None and h not in _LOOPBACK:
        raise OSError(f"misim test guard: refusing to resolve non-loopback host {h!r}")
    return _real_getaddrinfo(host, *args, **kwargs)


def _guarded_connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in _LOOPBACK:
        raise OSError(f"misim test guard: refusing to connect to non-loopback address {address[0]!r}")
    return _real_connect(self, address)


socket.getaddrinfo = _guarded_getaddrinfo
socket.socket.connect = _guarded_connect
