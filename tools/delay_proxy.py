"""A TCP proxy on loopback that delays each direction by a fixed time: a long link (e.g. a door
on a cellular modem, RTT 50 ms) simulated between a client and a local broker. Bytes keep their
order; ``drop_connections()`` cuts every link at once (a link failure), ``refuse`` refuses new
ones. ``hold_publishes(n)`` lets only ``n`` more MQTT PUBLISH packets through towards the broker and
holds every packet after them (in order) until ``release()``: a broker that has received exactly
the first ``n`` of what the client sent. Loopback only: it never listens on or connects to another
address.

    python tools/delay_proxy.py --target-port 1883 --rtt-ms 50 [--port 18830]
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time

LOOPBACK = "127.0.0.1"
PUBLISH = 3  # MQTT control packet type


def _mqtt_packets(data: bytes) -> tuple[list[bytes], bytes]:
    """Split a client's byte stream into whole MQTT packets (fixed header: type, then the
    remaining length in up to 4 bytes of 7 bits); the rest is the start of the next one."""
    packets, at = [], 0
    while True:
        length, shift, i = 0, 0, at + 1
        while i < len(data) and i - at <= 4:
            length |= (data[i] & 0x7F) << shift
            shift += 7
            i += 1
            if not data[i - 1] & 0x80:
                break
        else:
            return packets, data[at:]
        if i + length > len(data):
            return packets, data[at:]
        packets.append(data[at:i + length])
        at = i + length


class DelayProxy:
    def __init__(self, target_port: int, *, delay_up_s: float = 0.0, delay_down_s: float = 0.0,
                 port: int = 0) -> None:
        self.target_port = target_port
        self.delay_up_s, self.delay_down_s = delay_up_s, delay_down_s
        self.port = port
        self.refuse = False
        self._limit: int | None = None  # hold_publishes: PUBLISH packets still let through
        self.publishes_held = 0  # PUBLISH packets from the client held back (hold_publishes)
        self._held: list[tuple[asyncio.Queue, bytes]] = []
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="delay-proxy", daemon=True)

    def start(self) -> DelayProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("delay proxy did not start")
        return self

    def __enter__(self) -> DelayProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._accept, LOOPBACK, self.port))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        tasks = asyncio.all_tasks(self._loop)
        for t in tasks:
            t.cancel()
        self._loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        self._loop.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._link(reader, writer)
        except asyncio.CancelledError:  # stop(): asyncio 3.11 would report a cancelled handler
            writer.transport.abort()

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refuse:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(LOOPBACK, self.target_port)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer, lambda: self.delay_up_s, up=True),
                             self._pipe(up_reader, writer, lambda: self.delay_down_s),
                             return_exceptions=True)
        for w in (writer, up_writer):
            self._writers.discard(w)
            w.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay, *,
                    up: bool = False) -> None:
        """Forward in order, each chunk ``delay()`` seconds after it arrived (towards the broker,
        packet by packet, through :meth:`hold_publishes`'s gate)."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        pending = b""  # towards the broker: the start of a packet not yet whole

        async def release() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    break
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()
            writer.close()

        releaser = asyncio.ensure_future(release())
        try:
            while data := await reader.read(65536):
                if not up:
                    queue.put_nowait((time.monotonic() + delay(), data))
                    continue
                packets, pending = _mqtt_packets(pending + data)
                for packet in packets:
                    self._gate(queue, packet, time.monotonic() + delay())
        finally:
            queue.put_nowait((0.0, b""))
            await asyncio.gather(releaser, return_exceptions=True)

    def _gate(self, queue: asyncio.Queue, packet: bytes, due: float) -> None:
        if self._limit is not None and (self._held or (packet[0] >> 4 == PUBLISH and self._limit <= 0)):
            self._held.append((queue, packet))
            self.publishes_held += packet[0] >> 4 == PUBLISH
            return
        if self._limit is not None and packet[0] >> 4 == PUBLISH:
            self._limit -= 1
        queue.put_nowait((due, packet))

    def hold_publishes(self, n: int) -> None:
        """Let ``n`` more PUBLISH packets through towards the broker, then hold everything."""
        self._loop.call_soon_threadsafe(setattr, self, "_limit", n)

    def release(self) -> None:
        """Send on what :meth:`hold_publishes` held, in order; the gate is open again."""
        def go() -> None:
            self._limit = None
            for queue, packet in self._held:
                queue.put_nowait((time.monotonic(), packet))
            self._held.clear()
        self._loop.call_soon_threadsafe(go)

    def drop_connections(self) -> None:
        """Cut every open link now (bytes still in the delay line are lost)."""
        def cut() -> None:
            for w in list(self._writers):
                w.transport.abort()
            self._writers.clear()
        self._loop.call_soon_threadsafe(cut)

    def stop(self) -> None:
        self.drop_connections()
        if self._server is not None:
            self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target-port", type=int, required=True, help="the broker's port on 127.0.0.1")
    parser.add_argument("--rtt-ms", type=float, default=50.0, help="round trip added (half each way)")
    parser.add_argument("--port", type=int, default=0, help="listen port on 127.0.0.1 (0: any free one)")
    args = parser.parse_args()
    half = args.rtt_ms / 2000.0
    proxy = DelayProxy(args.target_port, delay_up_s=half, delay_down_s=half, port=args.port).start()
    print(f"127.0.0.1:{proxy.port} -> 127.0.0.1:{args.target_port}, RTT +{args.rtt_ms:.0f} ms", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        proxy.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
