"""The MLLP listener (HL7 v2 Minimal Lower Layer Protocol, release 2: a message is framed
as 0x0B <message> 0x1C 0x0D).

Each connection may carry many messages, one after another; a frame may arrive split
over several reads, and several frames in one read. Bytes outside a frame are dropped.
A frame larger than `max_message_bytes` is answered AR and discarded without being
buffered whole. Every message is answered only after the pipeline has committed it (or
kept it as rejected), so an AA means the message and its resources are on disk. A bad
frame never ends the listener: every failure is answered on its own connection.
"""

from __future__ import annotations

import asyncio
import logging
import socket

from adapters.hl7v2.ack import ack_for_exception, build_ack
from adapters.hl7v2.errors import APPLICATION_INTERNAL_ERROR, Hl7Error, warnings_of
from adapters.pipeline import Pipeline
from adapters.translation import describe_failure
from fhir_server.storage.base import Context

log = logging.getLogger(__name__)

START = b"\x0b"
END = b"\x1c\x0d"
DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
FEED = "hl7v2"


def frame(message: bytes | str) -> bytes:
    data = message.encode("utf-8") if isinstance(message, str) else message
    return START + data + END


HEAD_BYTES = 4096  # kept of an oversized frame, so its MSH can still be answered


class Oversized(bytes):
    """The first HEAD_BYTES of a frame that went past the size limit."""


class FrameReader:
    """Splits a byte stream into MLLP frames."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._buffer = bytearray()
        self._head = b""
        self._in_frame = False
        self._oversized = False  # inside a frame that went past max_bytes

    def feed(self, data: bytes) -> list[bytes]:
        """Frames completed by `data`; an `Oversized` stands for a frame that was too large."""
        out: list[bytes] = []
        view = data
        while view:
            if not self._in_frame:
                start = view.find(START)
                if start < 0:
                    return out  # garbage between frames
                self._in_frame = True
                self._buffer.clear()
                self._oversized = False
                view = view[start + 1:]
                continue
            end = view.find(b"\x1c")
            chunk = view if end < 0 else view[:end]
            if not self._oversized:
                self._buffer += chunk
                if len(self._buffer) > self.max_bytes:
                    self._oversized = True
                    self._head = bytes(self._buffer[:HEAD_BYTES])
                    self._buffer.clear()
            if end < 0:
                if not self._oversized:
                    # a 0x0B inside a frame means the sender gave up on the last frame
                    restart = self._buffer.rfind(START)
                    if restart >= 0:
                        del self._buffer[:restart + 1]
                return out
            out.append(Oversized(self._head) if self._oversized else bytes(self._buffer))
            self._in_frame = False
            self._buffer.clear()
            view = view[end + 1:]
            if view[:1] == b"\r":
                view = view[1:]
        return out


async def start_mllp_server(pipeline: Pipeline, ctx: Context, host: str, port: int, *,
                            max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
                            ) -> asyncio.Server:
    """Listen for MLLP on host:port (port 0 picks a free one: see server.sockets)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _serve_connection(pipeline, ctx, reader, writer, max_message_bytes)

    return await asyncio.start_server(handle, host, port)


async def _serve_connection(pipeline: Pipeline, ctx: Context, reader: asyncio.StreamReader,
                            writer: asyncio.StreamWriter, max_bytes: int) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            # Without this, Nagle's algorithm and the peer's delayed ACK hold each small
            # ACK back for up to 40 ms, capping a one-at-a-time sender at ~25 messages/s.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
    frames = FrameReader(max_bytes)
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            for message in frames.feed(data):
                writer.write(frame(await _answer(pipeline, ctx, message, max_bytes)))
                await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass  # the peer went away; anything it had sent complete is already answered
    except Exception as exc:
        log.error("MLLP connection failed: %s", describe_failure(exc))
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (ConnectionError, OSError):
            pass


async def _answer(pipeline: Pipeline, ctx: Context, message: bytes, max_bytes: int) -> str:
    if isinstance(message, Oversized):
        error = Hl7Error(f"Message is larger than the {max_bytes} bytes this receiver takes",
                         APPLICATION_INTERNAL_ERROR, ack_code="AR")
        head = bytes(message).split(b"\r", 1)[0].split(b"\n", 1)[0]
        return build_ack(head + b"\r", "AR", error)
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
