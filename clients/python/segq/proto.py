"""segq protocol v1 documents in Python: encode a job exactly as docs/protocol.md "Job" describes,
decode results and events, and expand a result's RLE mask. Pure msgpack; numpy is imported only
by the helpers that return arrays. Error codes are common/common.h's names (schema.ERR)."""
import re

import msgpack

from .schema import ERR

VERSION = 1
MAX_ID = 128
MAX_MODEL = 64
MAX_TENANT = 64
MAX_IMAGE_BYTES = 64 << 20
MAX_SIDE = 16384
MAX_PIXELS = 64 << 20
MAX_UINT32 = (1 << 32) - 1
MAX_META = 64 << 10

FORMATS = ("jpeg", "gray8", "gray16", "rgb8", "rgb16")
# Bytes per pixel of the raw formats (row-major; RGB interleaved; 16-bit little-endian).
RAW_BPP = {"gray8": 1, "gray16": 2, "rgb8": 3, "rgb16": 6}
OUTPUTS = ("polygons", "mask")
TERMINAL_STATES = ("done", "failed", "canceled")
# Job event types after which a job's channel has nothing more (docs/protocol.md "Job events").
TERMINAL_TYPES = TERMINAL_STATES

_NAME = re.compile(r"^[A-Za-z0-9._:-]+$")


class ProtocolError(ValueError):
    """A document that does not follow protocol v1; `code` is the protocol's error code name."""

    def __init__(self, code, message):
        super().__init__("%s: %s" % (code, message))
        self.code = code


def valid_name(s, max_len):
    """True if s is a non-empty str of at most max_len bytes of the id alphabet."""
    return isinstance(s, str) and 0 < len(s) <= max_len and _NAME.match(s) is not None


def _check_name(what, s, max_len):
    if not isinstance(s, str):
        raise ProtocolError(ERR.wrong_field_type, "%s must be a str, got %s" % (what, type(s).__name__))
    if len(s.encode()) > max_len:
        raise ProtocolError(ERR.field_too_large, "%s is longer than %d bytes" % (what, max_len))
    if not valid_name(s, max_len):
        raise ProtocolError(ERR.invalid_field_value,
                            "%s must be 1-%d characters of [A-Za-z0-9._:-], got %r" % (what, max_len, s))


def _is_uint(x):
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def sniff_format(data):
    """The protocol image format of encoded bytes (only JPEG is sent encoded), or None."""
    if len(data) >= 3 and data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    return None


def encode_job(id, model, data, fmt, width=None, height=None, params=None, priority=None,
               deadline_ms=None, group=None, tenant=None, meta=None, models=None, weights=None):
    """The msgpack job document (bytes). Optional fields are present only when given (not None),
    so the decoder's defaults apply otherwise. Raises ProtocolError naming the error code the
    worker would answer with, so a bad job fails at the caller instead of in a result."""
    _check_name("id", id, MAX_ID)
    _check_name("model", model, MAX_MODEL)
    if fmt not in FORMATS:
        raise ProtocolError(ERR.invalid_field_value, "image format must be one of %s, got %r"
                            % (", ".join(FORMATS), fmt))
    if isinstance(data, (bytearray, memoryview)):
        data = bytes(data)
    if not isinstance(data, bytes):
        raise ProtocolError(ERR.wrong_field_type, "image data must be bytes")
    if len(data) > MAX_IMAGE_BYTES:
        raise ProtocolError(ERR.field_too_large, "image data is %d bytes (max %d)" % (len(data), MAX_IMAGE_BYTES))
    image = {"format": fmt, "data": data}
    if fmt in RAW_BPP:
        for name, val in (("width", width), ("height", height)):
            if val is None:
                raise ProtocolError(ERR.missing_field, "%s images need %s" % (fmt, name))
            if not _is_uint(val):
                raise ProtocolError(ERR.wrong_field_type, "%s must be a non-negative int" % name)
            if val == 0:
                raise ProtocolError(ERR.image_empty, "%s is 0" % name)
            if val > MAX_SIDE:
                raise ProtocolError(ERR.image_too_large, "%s must be at most %d, got %d" % (name, MAX_SIDE, val))
        if width * height > MAX_PIXELS:
            raise ProtocolError(ERR.image_too_large, "%dx%d is more than %d pixels" % (width, height, MAX_PIXELS))
        if len(data) != width * height * RAW_BPP[fmt]:
            raise ProtocolError(ERR.invalid_field_value, "%s %dx%d needs %d bytes, got %d"
                                % (fmt, width, height, width * height * RAW_BPP[fmt], len(data)))
        image["width"] = width
        image["height"] = height
    doc = {"v": VERSION, "id": id, "model": model, "image": image}
    if params:
        doc["params"] = _encode_params(params)
    if models is not None:
        doc["models"] = _encode_models(model, models, weights)
    elif weights is not None:
        raise ProtocolError(ERR.missing_field, "weights need models")
    if priority is not None:
        if not isinstance(priority, int) or isinstance(priority, bool):
            raise ProtocolError(ERR.wrong_field_type, "priority must be an int")
        doc["priority"] = priority
    if deadline_ms is not None:
        if not _is_uint(deadline_ms):
            raise ProtocolError(ERR.wrong_field_type, "deadline_ms must be a non-negative int (epoch ms)")
        doc["deadline_ms"] = deadline_ms
    if group is not None:
        _check_name("group", group, MAX_ID)
        doc["group"] = group
    if tenant is not None:
        _check_name("tenant", tenant, MAX_TENANT)
        doc["tenant"] = tenant
    if meta is not None:
        try:
            packed_meta = msgpack.packb(meta, use_bin_type=True)
        except (TypeError, ValueError) as e:
            raise ProtocolError(ERR.wrong_field_type, "meta is not msgpack-encodable: %s" % e)
        if len(packed_meta) > MAX_META:
            raise ProtocolError(ERR.field_too_large, "meta is %d bytes encoded (max %d)" % (len(packed_meta), MAX_META))
        doc["meta"] = meta
    return msgpack.packb(doc, use_bin_type=True)


MAX_MEMBERS = 8


def _encode_models(model, models, weights=None):
    """The ensemble field: `models` is a list of names, (name, weight) pairs or
    {"name", "weight"} maps; `weights` (optional) a parallel list of weights. `model` must be
    one of them (docs/protocol.md "Ensembles")."""
    if isinstance(models, (str, bytes)) or not isinstance(models, (list, tuple)):
        raise ProtocolError(ERR.wrong_field_type, "models must be a list")
    if weights is not None and len(weights) != len(models):
        raise ProtocolError(ERR.invalid_field_value, "weights and models differ in length")
    if not 2 <= len(models) <= MAX_MEMBERS:
        raise ProtocolError(ERR.invalid_field_value,
                            "models must have 2 to %d entries, got %d" % (MAX_MEMBERS, len(models)))
    out, seen, total = [], set(), 0.0
    for i, m in enumerate(models):
        weight = None
        if isinstance(m, dict):
            extra = set(m) - {"name", "weight"}
            if extra:
                raise ProtocolError(ERR.invalid_field_value, "models[%d]: unknown keys %s" % (i, sorted(extra)))
            name, weight = m.get("name"), m.get("weight")
        elif isinstance(m, (list, tuple)) and len(m) == 2:
            name, weight = m
        else:
            name = m
        if weights is not None:
            weight = weights[i]
        _check_name("models[%d].name" % i, name, MAX_MODEL)
        if name in seen:
            raise ProtocolError(ERR.invalid_field_value, "models: %r is named twice" % name)
        seen.add(name)
        entry = {"name": name}
        if weight is not None:
            if isinstance(weight, bool) or not isinstance(weight, (int, float)):
                raise ProtocolError(ERR.wrong_field_type, "models[%d].weight must be a number" % i)
            if not (0.0 <= float(weight) < float("inf")):
                raise ProtocolError(ERR.invalid_field_value,
                                    "models[%d].weight must be finite and >= 0, got %r" % (i, weight))
            entry["weight"] = float(weight)
        total += entry.get("weight", 1.0)
        out.append(entry)
    if model not in seen:
        raise ProtocolError(ERR.invalid_field_value, "models must include the job's model %r" % model)
    if total <= 0.0:
        raise ProtocolError(ERR.invalid_field_value, "models: every weight is 0")
    return out


def _encode_params(params):
    out = {}
    for key, val in params.items():
        if val is None:
            continue
        if key == "threshold":
            if isinstance(val, bool) or not isinstance(val, (int, float)):
                raise ProtocolError(ERR.wrong_field_type, "threshold must be a number")
            if not 0.0 <= float(val) <= 1.0:
                raise ProtocolError(ERR.invalid_field_value, "threshold must be in [0, 1], got %r" % val)
            out[key] = float(val)
        elif key == "min_area":
            if not _is_uint(val):
                raise ProtocolError(ERR.wrong_field_type, "min_area must be a non-negative int")
            if val > MAX_UINT32:
                raise ProtocolError(ERR.invalid_field_value, "min_area must be below 2**32, got %d" % val)
            out[key] = val
        elif key == "outputs":
            if isinstance(val, str):
                val = [val]
            val = list(val)
            if not val:
                raise ProtocolError(ERR.invalid_field_value, "outputs must name at least one of %s" % ", ".join(OUTPUTS))
            for o in val:
                if o not in OUTPUTS:
                    raise ProtocolError(ERR.invalid_field_value, "unknown output %r (use %s)" % (o, ", ".join(OUTPUTS)))
            out[key] = val
        else:
            # Unknown params are ignored by v1 workers; pass them through for newer ones.
            out[key] = val
    return out


def decode_job(buf):
    """A job document as a dict (for tests and tools; the worker's decoder is the strict one)."""
    return _decode_map(buf, "job")


def decode_result(buf):
    """A result document as a dict (str keys and values, bytes for bin)."""
    return _decode_map(buf, "result")


def decode_event(buf):
    """An event document as a dict."""
    return _decode_map(buf, "event")


def fast_record(id, off, epoch, attempt, worker, ts_ms, result):
    """The record a worker stores for a fast run that is done (docs/protocol.md "Fast runs"):
    the terminal event {v, id, type, state, off, epoch, ts_ms, attempt, worker} with off = the
    claimed off + 1, then the encoded result document. off, epoch and attempt as the claim
    returned them (bytes or str)."""
    s = lambda x: x.decode() if isinstance(x, bytes) else x
    ev = {"v": 1, "id": s(id), "type": "done", "state": "done", "off": int(off) + 1,
          "epoch": s(epoch), "ts_ms": int(ts_ms), "attempt": int(attempt), "worker": s(worker)}
    return msgpack.packb(ev, use_bin_type=True) + result


def decode_record(buf):
    """A finished job's record (the string at P:job:<id>, docs/protocol.md "Redis key layout"):
    (event, result, job): the terminal event and the result document as dicts, and the job
    document's bytes (dead letters only; None otherwise). Raises ProtocolError if malformed."""
    try:
        up = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=len(buf) + 1)
        up.feed(buf)
        event = up.unpack()
        result = up.unpack()
        rest = buf[up.tell():]
    except Exception as e:
        raise ProtocolError(ERR.malformed_msgpack, "job record is not two msgpack maps: %s" % e)
    if not isinstance(event, dict) or not isinstance(result, dict):
        raise ProtocolError(ERR.malformed_msgpack, "job record holds something else than maps")
    return event, result, (bytes(rest) if rest else None)


def _decode_map(buf, what):
    try:
        doc = msgpack.unpackb(buf, raw=False, strict_map_key=False)
    except Exception as e:  # msgpack raises several unrelated types for bad input
        raise ProtocolError(ERR.malformed_msgpack, "%s is not valid msgpack: %s" % (what, e))
    if not isinstance(doc, dict):
        raise ProtocolError(ERR.malformed_msgpack, "%s is not a msgpack map" % what)
    if doc.get("v") != VERSION:
        raise ProtocolError(ERR.unsupported_version, "%s has v=%r" % (what, doc.get("v")))
    return doc


def rle_decode(mask):
    """The result's `mask` ({encoding: "rle", width, height, counts}) as bytes of 0/1, one per
    pixel, row-major. Raises ProtocolError if the runs do not cover width*height exactly."""
    if not isinstance(mask, dict) or mask.get("encoding") != "rle":
        raise ProtocolError(ERR.invalid_field_value, "mask encoding must be 'rle'")
    w, h, counts = mask.get("width"), mask.get("height"), mask.get("counts")
    if not _is_uint(w) or not _is_uint(h) or not isinstance(counts, (list, tuple)):
        raise ProtocolError(ERR.wrong_field_type, "mask needs width, height and counts")
    total = sum(counts)
    if total != w * h:
        raise ProtocolError(ERR.invalid_field_value, "mask runs cover %d pixels, %dx%d needs %d" % (total, w, h, w * h))
    out = bytearray(w * h)
    pos = 0
    one = False
    for n in counts:
        if one and n:
            out[pos:pos + n] = b"\x01" * n
        pos += n
        one = not one
    return bytes(out)


def rle_to_numpy(mask):
    """The result's mask as a numpy uint8 array of shape (height, width), values 0/1."""
    import numpy as np
    return np.frombuffer(rle_decode(mask), dtype=np.uint8).reshape(mask["height"], mask["width"])


def rle_encode(bits, width, height):
    """Inverse of rle_decode (for tests and tools): bytes/sequence of 0/1 per pixel → mask map."""
    counts = []
    cur = 0
    run = 0
    for b in bits:
        b = 1 if b else 0
        if b != cur:
            counts.append(run)
            cur = b
            run = 0
        run += 1
    counts.append(run)
    return {"encoding": "rle", "width": width, "height": height, "counts": counts}
