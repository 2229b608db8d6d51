"""mosquitto (Debian's) on a free loopback port, for the tests: a configuration in a temporary
folder (one listener on 127.0.0.1, anonymous clients, persistence there, so that retained
reports and queued messages survive a restart), mosquitto in the foreground as a child process.
Also a paho-mqtt subscriber that collects what the broker sends, reconnecting when it goes."""

from __future__ import annotations

import getpass
import json
import subprocess
import threading
import time
from pathlib import Path

from conftest import free_port, listening, need_program, stop_process


class Mosquitto:
    def __init__(self, folder: str | Path):
        self.dir = Path(folder)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.bin = need_program("mosquitto")
        self.proc = None
        self.port = free_port()
        self.start()

    def start(self) -> None:
        conf = self.dir / "mosquitto.conf"
        for _ in range(5):  # a port taken between the choice and mosquitto's bind: another
            conf.write_text(
                f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
                f"persistence true\npersistence_location {self.dir}/\n"
                # As root mosquitto would change to user "mosquitto", who cannot write here.
                f"user {getpass.getuser()}\n"
            )
            with open(self.dir / "mosquitto.log", "ab") as log:
                self.proc = subprocess.Popen(
                    [self.bin, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT
                )
            if listening(self.proc, self.port):
                return
            self.stop()
            self.port = free_port()
        raise RuntimeError("mosquitto did not start:\n" + self.log())

    def log(self) -> str:
        p = self.dir / "mosquitto.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def stop(self) -> None:
        """SIGTERM: mosquitto saves its persistent state (retained messages) and exits."""
        stop_process(self.proc)

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


class Subscriber:
    """paho-mqtt, subscribed to `topic` (QoS 1); .messages: [(topic, JSON payload or raw bytes,
    retained)], in the order they came; reconnects (and subscribes again) by itself."""

    def __init__(self, port: int, topic: str = "ota/+/ota"):
        import paho.mqtt.client as mqtt

        self.messages: list = []
        self.lock = threading.Lock()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-{id(self)}")
        self.c.reconnect_delay_set(0.1, 0.5)
        self.subscribed = threading.Event()
        self.c.on_connect = lambda c, u, f, rc, p=None: c.subscribe(topic, qos=1)
        self.c.on_subscribe = lambda *a: self.subscribed.set()
        self.c.on_message = self._got
        self.c.connect("127.0.0.1", port, keepalive=5)
        self.c.loop_start()
        assert self.subscribed.wait(10), "the subscriber did not subscribe"

    def _got(self, client, userdata, msg):
        try:
            payload = json.loads(msg.payload)
        except ValueError:
            payload = bytes(msg.payload)
        with self.lock:
            self.messages.append((msg.topic, payload, bool(msg.retain)))

    def wait_for(self, pred, timeout: float = 10.0):
        """The first message (topic, payload, retained) for which pred is true, waiting for it."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self.lock:
                for m in self.messages:
                    if pred(m):
                        return m
            time.sleep(0.02)
        raise AssertionError(f"no such message in {timeout} s; got {self.messages}")

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()
