"""Where an ONNX model keeps external tensor data, read from the protobuf wire format.

docs/bundle.md rule 5: external data may only point at a file the manifest lists. This
is the C++ runtime's onnx_scan.cc in Python (same fields of onnx.proto3, same depth
limit, same errors), so both loaders apply the rule to the same tensors without the
runtime importing onnx. Raw tensor bytes are skipped by length, never copied.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_DEPTH = 64


class OnnxScanError(ValueError):
    """A file that is not a readable ONNX model (the message says where it stops making sense)."""


@dataclass
class ExternalRef:
    tensor: str
    location: str
    offset: int = 0
    length: int = -1


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while shift < 64:
        if pos >= len(buf):
            raise OnnxScanError("truncated varint")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value & (2**64 - 1), pos
        shift += 7
    raise OnnxScanError("varint longer than 10 bytes")


def _fields(msg: memoryview):
    """(field, wire, value) per field; value is a memoryview (wire 2) or an int (wire 0), else None."""
    pos = 0
    while pos < len(msg):
        key, pos = _varint(msg, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(msg, pos)
        elif wire == 2:
            n, pos = _varint(msg, pos)
            if n > len(msg) - pos:
                raise OnnxScanError("length-delimited field runs past the end")
            value, pos = msg[pos : pos + n], pos + n
        elif wire in (1, 5):
            n = 8 if wire == 1 else 4
            if n > len(msg) - pos:
                raise OnnxScanError("fixed-size field runs past the end")
            value, pos = None, pos + n
        else:
            raise OnnxScanError(f"unsupported wire type {wire}")
        yield field, wire, value


def _text(value: memoryview) -> str:
    return bytes(value).decode("utf-8", errors="replace")


def _int(text: str) -> int:
    """strtoll-like: the leading integer of `text`, 0 when there is none."""
    digits = text.strip()
    sign = -1 if digits.startswith("-") else 1
    digits = digits.lstrip("+-")
    n = len(digits) - len(digits.lstrip("0123456789"))
    return sign * int(digits[:n]) if n else 0


def _tensor(t: memoryview, out: list[ExternalRef]) -> None:
    name, location, offset, length, external = "", None, 0, -1, False
    for f, w, v in _fields(t):
        if f == 8 and w == 2:
            name = _text(v)
        elif f == 13 and w == 2:
            key = value = ""
            for ef, ew, ev in _fields(v):
                if ef == 1 and ew == 2:
                    key = _text(ev)
                elif ef == 2 and ew == 2:
                    value = _text(ev)
            if key == "location":
                location = value
            elif key == "offset":
                offset = _int(value)
            elif key == "length":
                length = _int(value)
        elif f == 14 and w == 0:
            external = v == 1
    if external or location is not None:
        if location is None:
            raise OnnxScanError(f"tensor {name} is external but names no location")
        out.append(ExternalRef(name, location, offset, length))


def _sparse(s: memoryview, out: list[ExternalRef]) -> None:
    for f, w, v in _fields(s):
        if f in (1, 2) and w == 2:
            _tensor(v, out)


def _node(n: memoryview, depth: int, out: list[ExternalRef]) -> None:
    for f, w, v in _fields(n):
        if f == 5 and w == 2:  # attribute
            for af, aw, av in _fields(v):
                if aw != 2:
                    continue
                if af in (5, 10):
                    _tensor(av, out)
                elif af in (6, 11):
                    _graph(av, depth + 1, out)
                elif af in (22, 23):
                    _sparse(av, out)


def _graph(g: memoryview, depth: int, out: list[ExternalRef]) -> None:
    if depth > MAX_DEPTH:
        raise OnnxScanError(f"subgraphs nested deeper than {MAX_DEPTH}")
    for f, w, v in _fields(g):
        if w != 2:
            continue
        if f == 1:
            _node(v, depth, out)
        elif f == 5:
            _tensor(v, out)
        elif f == 15:
            _sparse(v, out)


def external_data(model: bytes | memoryview) -> list[ExternalRef]:
    """Every external-data reference of a serialized ModelProto (initializers, Constant
    attributes, subgraphs, functions).

    Raises:
        OnnxScanError: the bytes are not a readable ONNX model.
    """
    out: list[ExternalRef] = []
    try:
        for f, w, v in _fields(memoryview(model)):
            if f == 7 and w == 2:
                _graph(v, 0, out)
            elif f == 25 and w == 2:  # functions: FunctionProto.node = 7
                for ff, fw, fv in _fields(v):
                    if ff == 7 and fw == 2:
                        _node(fv, 1, out)
    except OnnxScanError as e:
        raise OnnxScanError(f"not a readable ONNX model: {e}") from None
    return out
