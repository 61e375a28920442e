"""The MLLP listener (HL7 v2 Minimal Lower Layer Protocol, release 2: a message is framed
as 0x0B <message> 0x1C 0x0D).

Each connection may carry many messages, one after another; a frame may arrive split
over several reads, and several frames in one read. Bytes outside a frame are dropped.
A frame ends at 0x1C 0x0D only: a lone 0x1C is content (refused by the parser: AE).
A 0x0B inside an unfinished frame starts a new frame (the sender gave up on the old one),
whose bytes are kept as a rejected input without an ACK. A frame larger than
`max_message_bytes` is answered AR and kept as rejected, cut to its first
max_message_bytes; if its end has not come by then, the connection is closed after the
AR. A connection silent for `idle_timeout` seconds is closed (an unfinished frame on it
is kept as rejected). Every message is answered only after the pipeline has committed
it (or kept it as rejected), so an AA means the message and its resources are on disk.
A bad frame never ends the listener: every failure is answered on its own connection.
A frame holds one message (MLLP release 2): a frame with a second MSH is answered AE
naming it and kept as rejected, as is a message with more segments or field repetitions
than the pipeline's `max_resources` (adapters/hl7v2/limits.py). Parsing runs in a worker
thread (Pipeline), so a big message does not stop other connections being served.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

from adapters.hl7v2.ack import ack_for_exception, build_ack, read_header
from adapters.hl7v2.errors import APPLICATION_INTERNAL_ERROR, Hl7Error, warnings_of
from adapters.hl7v2.limits import check_message
from adapters.pipeline import Pipeline
from adapters.translation import describe_failure
from fhir_server.storage.base import Context

log = logging.getLogger(__name__)

START = b"\x0b"
END = b"\x1c\x0d"
DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
DEFAULT_IDLE_TIMEOUT = 300.0  # seconds without a byte before a connection is closed
FEED = "hl7v2"


def frame(message: bytes | str) -> bytes:
    data = message.encode("utf-8") if isinstance(message, str) else message
    return START + data + END


def _message_type(message: bytes) -> str:
    """MSH-9.1 (the message type) read without parsing the message."""
    header = read_header(message)
    line = message.split(b"\r", 1)[0].split(b"\n", 1)[0].decode("latin-1")
    fields = line.split(header.delimiters.field)
    if len(fields) < 9:
        return ""
    return fields[8].split(header.delimiters.component)[0].strip().upper()


def _frame_end(view: bytes) -> int:
    """Where the frame's end block (0x1C 0x0D) starts in `view`, or a 0x1C as its last
    byte (the 0x0D may come in the next read); -1 if neither. A 0x1C followed by anything
    else is content, which the parser refuses (a lone 0x1C used to cut the message)."""
    at = view.find(b"\x1c")
    while at >= 0 and at + 1 < len(view) and view[at + 1] != 0x0D:
        at = view.find(b"\x1c", at + 1)
    return at


class Oversized(bytes):
    """The first `max_bytes` of a frame that went past the size limit (kept as rejected);
    `received` counts every byte of it seen, `finished` says whether its end came."""

    received: int = 0
    finished: bool = True


class Abandoned(bytes):
    """What was received of a frame the sender gave up on: a new start block (0x0B)
    came before its end, or the connection closed or went idle inside it."""


class FrameReader:
    """Splits a byte stream into MLLP frames.

    A 0x0B inside an unfinished frame starts a new frame: the sender gave up on the
    last one (it timed out and resent, or the bytes before were noise). What it had
    sent of that frame is returned as `Abandoned` when it holds more than whitespace.
    A frame that grows past `max_bytes` is returned as `Oversized` (its first max_bytes
    kept, the rest counted and dropped): finished when its end is in the same data,
    else unfinished, and then the caller answers AR and closes the connection rather
    than read a frame that may never end."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._buffer = bytearray()
        self._in_frame = False
        self._received = 0  # bytes of the current frame, counted past max_bytes too
        self._oversized = False  # inside a frame that went past max_bytes
        self._fs_pending = False  # the last read ended with 0x1C: an end if 0x0D follows

    @property
    def in_frame(self) -> bool:
        return self._in_frame

    def feed(self, data: bytes) -> list[bytes]:
        """Frames completed by `data`, and `Abandoned` / `Oversized` items as above."""
        out: list[bytes] = []
        view = data
        while view:
            if not self._in_frame:
                start = view.find(START)
                if start < 0:
                    return out  # garbage between frames
                self._start_frame()
                view = view[start + 1:]
                continue
            if self._fs_pending:
                self._fs_pending = False
                if view[:1] == b"\r":  # the 0x1C that ended the last read ended the frame
                    out.append(self._finish())
                    view = view[1:]
                    continue
                self._add(b"\x1c")  # a lone 0x1C inside the content: the parser refuses it
            end = _frame_end(view)
            chunk = view if end < 0 else view[:end]
            restart = chunk.rfind(START)
            if restart >= 0:
                # the sender gave up on the frame so far and started another
                self._add(chunk[:restart])
                if self._oversized:
                    out.append(self._oversized_item(finished=False))
                    self._in_frame = False  # the caller ends the connection
                    return out
                abandoned = self.abandon()
                if abandoned is not None:
                    out.append(abandoned)
                self._start_frame()
                chunk = chunk[restart + 1:]
                view = view[restart + 1:]
                end = _frame_end(view)
            self._add(chunk)
            if end < 0:
                if self._oversized:
                    out.append(self._oversized_item(finished=False))
                    self._in_frame = False  # the caller ends the connection
                return out
            if end == len(view) - 1:  # 0x1C as the last byte: its 0x0D may come next read
                self._fs_pending = True
                return out
            out.append(self._finish())
            view = view[end + 2:]
        return out

    def _finish(self) -> bytes:
        item = self._oversized_item(finished=True) if self._oversized else bytes(self._buffer)
        self._in_frame = False
        self._buffer.clear()
        return item

    def abandon(self) -> Abandoned | None:
        """Drop the unfinished frame; what it held, unless only whitespace."""
        kept = bytes(self._buffer)
        self._in_frame = False
        self._buffer.clear()
        return Abandoned(kept) if kept.strip() and not self._oversized else None

    def _start_frame(self) -> None:
        self._fs_pending = False
        self._in_frame = True
        self._buffer.clear()
        self._received = 0
        self._oversized = False

    def _add(self, chunk: bytes) -> None:
        self._received += len(chunk)
        room = self.max_bytes - len(self._buffer)
        if room > 0:
            self._buffer += chunk[:room]
        if self._received > self.max_bytes:
            self._oversized = True

    def _oversized_item(self, *, finished: bool) -> Oversized:
        item = Oversized(bytes(self._buffer))
        item.received = self._received
        item.finished = finished
        self._buffer.clear()
        return item


async def start_mllp_server(pipeline: Pipeline, ctx: Context, host: str, port: int, *,
                            max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                            idle_timeout: float = DEFAULT_IDLE_TIMEOUT) -> asyncio.Server:
    """Listen for MLLP on host:port (port 0 picks a free one: see server.sockets). A
    connection that sends nothing for `idle_timeout` seconds is closed."""

    busy = _Busy()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _serve_connection(pipeline, ctx, reader, writer, max_message_bytes,
                                idle_timeout, busy)

    server = await asyncio.start_server(handle, host, port)
    server._fhir_fusion_busy = busy  # type: ignore[attr-defined]  # for finish_messages
    return server


class _Busy:
    """The messages a listener is processing, so that a shutdown can let them finish
    (committed and ACKed) before the store closes."""

    def __init__(self) -> None:
        self.count = 0
        self.closing = False
        self.idle = asyncio.Event()
        self.idle.set()

    def enter(self) -> None:
        self.count += 1
        self.idle.clear()

    def leave(self) -> None:
        self.count -= 1
        if self.count == 0:
            self.idle.set()


async def finish_messages(server: asyncio.Server, timeout: float = 30.0) -> bool:
    """After `server.close()`: take no new message on open connections and wait (up to
    `timeout` seconds) for those being processed to be stored and answered. Whether all
    finished. Python 3.11's wait_closed does not wait for connections, and closing the
    store under a message being stored failed it without an ACK."""
    busy: _Busy | None = getattr(server, "_fhir_fusion_busy", None)
    if busy is None:
        return True
    busy.closing = True
    try:
        await asyncio.wait_for(busy.idle.wait(), timeout)
    except TimeoutError:
        return False
    return True


async def _serve_connection(pipeline: Pipeline, ctx: Context, reader: asyncio.StreamReader,
                            writer: asyncio.StreamWriter, max_bytes: int,
                            idle_timeout: float, busy: _Busy | None = None) -> None:
    busy = busy or _Busy()
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            # Without this, Nagle's algorithm and the peer's delayed ACK hold each small
            # ACK back for up to 40 ms, capping a one-at-a-time sender at ~25 messages/s.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
    frames = FrameReader(max_bytes)
    ended = "closed"
    try:
        while True:
            try:
                data = await asyncio.wait_for(reader.read(65536), idle_timeout)
            except TimeoutError:
                ended = f"idle for {idle_timeout:g} s"
                log.info("MLLP connection closed after %s", ended)
                break
            if not data:
                break
            for message in frames.feed(data):
                if isinstance(message, Abandoned):
                    await _keep(pipeline, ctx, message, "MLLP frame abandoned by the sender: "
                                "a new start block (0x0B) came before its end (0x1C 0x0D)")
                    continue
                if busy.closing:
                    return  # shutting down: the sender resends what got no ACK
                busy.enter()
                try:
                    answer = await _answer(pipeline, ctx, message, max_bytes)
                    if answer is not None:  # an acknowledgement is not acknowledged
                        writer.write(frame(answer))
                        await writer.drain()
                finally:
                    busy.leave()
                if answer is None:
                    continue
                if isinstance(message, Oversized) and not message.finished:
                    return  # the rest of that frame cannot be taken: end the connection
    except (ConnectionError, asyncio.IncompleteReadError):
        pass  # the peer went away; anything it had sent complete is already answered
    except Exception as exc:
        log.error("MLLP connection failed: %s", describe_failure(exc))
    finally:
        unfinished = frames.abandon() if frames.in_frame else None
        if unfinished is not None:
            with contextlib.suppress(Exception):
                await _keep(pipeline, ctx, unfinished, "MLLP frame unfinished when the "
                            f"connection was {ended}: its end (0x1C 0x0D) never came")
        writer.close()
        try:
            await writer.wait_closed()
        except (ConnectionError, OSError):
            pass


async def _keep(pipeline: Pipeline, ctx: Context, data: bytes, reason: str) -> None:
    """Keep a partial frame as rejected (no ACK: the sender never finished it)."""
    try:
        await pipeline.keep_rejected(ctx, FEED, bytes(data), reason)
    except Exception as exc:
        log.error("MLLP partial frame could not be kept: %s", describe_failure(exc))


async def _answer(pipeline: Pipeline, ctx: Context, message: bytes,
                  max_bytes: int) -> str | None:
    """The ACK to send, or None for an inbound acknowledgement (HL7 v2.5 2.9.2: an ACK is
    never acknowledged; answering it makes some engines loop), kept as rejected."""
    if isinstance(message, Oversized):
        text = f"Message is larger than the {max_bytes} bytes this receiver takes"
        error = Hl7Error(text, APPLICATION_INTERNAL_ERROR, ack_code="AR")
        ended = "" if message.finished else " without its end (the connection is closed)"
        reason = (f"{text}: {message.received} bytes received{ended}; the first "
                  f"{len(message)} bytes are kept")
        try:
            await pipeline.keep_rejected(ctx, FEED, bytes(message), reason)
        except Exception as exc:  # still answer: the sender must not wait for nothing
            log.error("oversized MLLP message could not be kept: %s", describe_failure(exc))
        head = bytes(message).split(b"\r", 1)[0].split(b"\n", 1)[0]
        return build_ack(head + b"\r", "AR", error)
    if _message_type(message) == "ACK":
        await _keep(pipeline, ctx, message, "an acknowledgement (MSH-9 ACK) received on the "
                    "MLLP listener: not processed and, as HL7 requires, not acknowledged")
        return None
    refused = check_message(message, pipeline.max_resources)
    if refused is not None:
        try:
            await pipeline.keep_rejected(ctx, FEED, bytes(message), str(refused))
        except Exception as exc:  # still answer: the sender must not wait for nothing
            log.error("refused MLLP message could not be kept: %s", describe_failure(exc))
        return build_ack(message, "AE", refused)
    try:
        result = await pipeline.ingest(ctx, FEED, message)
    except Exception as exc:
        log.error("MLLP message could not be processed: %s", describe_failure(exc))
        return ack_for_exception(message, exc)
    if result.ok:
        return build_ack(message, "AA", warnings=warnings_of((result.result or {}).get("details")))
    if result.error is not None:
        return ack_for_exception(message, result.error)
    return build_ack(message, "AE", text=result.reason)
