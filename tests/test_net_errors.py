"""A download that cannot reach its server says which host and which URL, on every runtime the
network tests use; the exception stays a NetError (an OSError) with the socket's errno."""

import socket

DEVICE = """
import ota.update
try:
    ota.update.from_json({url!r}, reboot=False, backoff=0, retries=1)
    print("RESULT ok")
except Exception as e:
    print("RESULT", type(e).__name__, isinstance(e, OSError), e.args[0], e)
"""


def result(sim, url, hosts=""):
    r = sim.run(DEVICE.format(url=url), hosts=hosts)
    lines = [line for line in r.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, sim.out
    return lines[-1]


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now: connections are refused
    return port


def test_refused_connection_names_host_and_url(sim):
    port = free_port()
    url = "http://nas.lan/fw/manifest.json"
    line = result(sim, url, hosts=f"nas.lan=127.0.0.1:{port}")
    assert line.startswith("RESULT NetError True 111 "), line
    assert f"cannot connect to nas.lan:80 ({url})" in line, line


def test_unknown_host_names_host_and_url(sim):
    url = "http://nosuchhost.invalid:8080/manifest.json"
    line = result(sim, url)
    assert line.startswith("RESULT NetError True "), line
    assert f"cannot resolve nosuchhost.invalid ({url})" in line, line
