"""Reads a rosbag2 (sqlite3 or mcap) as raw CDR records with `rosbags`, no ROS needed.

Replay only forwards the serialized bytes, so no typestore is involved here: the
bag's type names pick the publishers' classes and its type hashes check them.
Latched topics are split off because they are published once, before the timed stream.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from rosbags.rosbag2 import Reader

from bev_quant_ros.errors import BagError
from bev_quant_ros.replay.player import Record

LATCHED_TOPICS = frozenset({"/tf_static"})


@dataclass(frozen=True)
class BagTopic:
    """One topic to replay: its type name, message count and recorded type hash."""

    name: str
    msgtype: str
    count: int
    type_hash: str  # "RIHS01_…", empty when the bag predates type hashes


class BagSource:
    """An open bag restricted to the selected topics, from ``start_offset_s`` on."""

    def __init__(self, bag_dir: str | Path, topics: Sequence[str] | None = None,
                 start_offset_s: float = 0.0) -> None:
        if not start_offset_s >= 0:
            raise BagError(f"start offset must be >= 0 s, got {start_offset_s}")
        path = Path(bag_dir)
        if not path.is_dir():
            raise BagError(f"bag directory {str(path)!r} does not exist")
        if not (path / "metadata.yaml").is_file():
            raise BagError(f"{str(path)!r} is not a rosbag2 directory: it has no metadata.yaml")
        self.path = path
        try:
            self._reader = Reader(path)
            self._reader.open()
        except Exception as error:  # rosbags raises a different type per storage backend
            raise BagError(f"cannot read bag {str(path)!r}: {type(error).__name__}: {error}") from error
        try:
            self.topics = self._select_topics(topics)
        except BagError:
            self.close()
            raise
        self.start_ns = self._reader.start_time + int(round(start_offset_s * 1e9))
        self._connections = [c for c in self._reader.connections if c.topic in self.topics]

    def _select_topics(self, wanted: Sequence[str] | None) -> dict[str, BagTopic]:
        by_name = {c.topic: c for c in self._reader.connections}
        unknown = sorted(set(wanted or ()) - set(by_name))
        if unknown:
            raise BagError(f"topics not in bag {str(self.path)!r}: {', '.join(unknown)} "
                           f"(bag has: {', '.join(sorted(by_name))})")
        names = sorted(by_name) if wanted is None else sorted(set(wanted))
        return {name: BagTopic(name, by_name[name].msgtype,
                               sum(c.msgcount for c in self._reader.connections if c.topic == name),
                               by_name[name].digest or "")
                for name in names}

    def latched_records(self) -> list[Record]:
        """All messages of the latched topics, whatever the start offset."""
        return list(self._read([c for c in self._connections if c.topic in LATCHED_TOPICS], None))

    def records(self) -> Iterator[Record]:
        """The timed stream: every selected, non-latched message from the start offset on."""
        return self._read([c for c in self._connections if c.topic not in LATCHED_TOPICS],
                          self.start_ns)

    def _read(self, connections: list, start_ns: int | None) -> Iterator[Record]:
        if not connections:
            return
        try:
            for connection, stamp_ns, raw in self._reader.messages(connections, start=start_ns):
                yield Record(connection.topic, stamp_ns, raw if isinstance(raw, bytes) else bytes(raw))
        except Exception as error:  # a truncated or corrupt file fails only when read
            raise BagError(f"cannot read bag {str(self.path)!r}: {type(error).__name__}: {error}") from error

    def close(self) -> None:
        if self._reader.is_open:
            self._reader.close()

    def __enter__(self) -> BagSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


_END = object()


def prefetched(records: Iterable[Record], depth: int) -> Iterator[Record]:
    """Read ``records`` in a background thread, at most ``depth`` ahead of the consumer.

    Reading a camera image from the bag costs about as much as publishing it; file reads
    release the GIL, so reading ahead lets the two overlap instead of adding up. Errors of
    the reader are re-raised in the consumer; closing the iterator early stops the thread.
    """
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    closed = threading.Event()

    def put(item: object) -> bool:
        """Block until there is room, unless the consumer went away; True when queued."""
        while not closed.is_set():
            try:
                buffer.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for record in records:
                if not put(record):
                    return
        except BaseException as error:  # handed to the consumer, which re-raises it
            put(error)
            return
        put(_END)

    thread = threading.Thread(target=produce, name="bag-prefetch", daemon=True)
    thread.start()
    try:
        while (item := buffer.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        closed.set()
        thread.join()
