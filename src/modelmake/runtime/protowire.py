"""The protobuf wire format walked field by field, without parsing a message: how onnxmeta reads a
model's metadata, or tells what a serialized model holds, without copying its weights (parsing a
90 MB ONNX file copies all 90 MB)."""
from __future__ import annotations

import io
import os
from typing import BinaryIO, Iterator

VARINT, FIXED64, LENGTH_DELIMITED, FIXED32 = 0, 1, 2, 5


class NotWire(Exception):
    """The bytes are not a well-formed protobuf message."""


def length_delimited(f: BinaryIO, end: int) -> Iterator[tuple[int, int]]:
    """(field number, length) of each length-delimited field (messages, strings, bytes, packed
    arrays) of the message from f's position up to offset `end`, in file order; other fields are
    skipped. At each yield f is at the field's payload; the walk goes on after the payload
    whatever the caller read of it."""
    while f.tell() < end:
        tag = varint(f)
        field, wire = tag >> 3, tag & 7
        if field == 0:
            raise NotWire
        if wire == LENGTH_DELIMITED:
            length = varint(f)
            start = f.tell()
            if start + length > end:
                raise NotWire
            yield field, length
            f.seek(start + length)
        elif wire == VARINT:
            varint(f)
        elif wire in (FIXED64, FIXED32):
            f.seek(8 if wire == FIXED64 else 4, os.SEEK_CUR)
        else:  # groups: not used by ONNX
            raise NotWire
    if f.tell() != end:
        raise NotWire


def strings(data: bytes) -> dict[int, str]:
    """The length-delimited fields of a small message as UTF-8 strings, by field number; a field
    given twice keeps its last value, as protobuf does."""
    f, out = io.BytesIO(data), {}
    for field, length in length_delimited(f, len(data)):
        out[field] = text(f, length)
    return out


def text(f: BinaryIO, length: int) -> str:
    """The `length` bytes at f's position, as the UTF-8 string field they are."""
    try:
        return f.read(length).decode("utf-8")
    except UnicodeDecodeError:
        raise NotWire from None


def varint(f: BinaryIO) -> int:
    value = shift = 0
    while shift < 64:
        byte = f.read(1)
        if not byte:
            raise NotWire
        value |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return value
        shift += 7
    raise NotWire
