#!/usr/bin/python3
"""Unit tests of the Python client's codec (clients/python/segq/proto.py and the image handling of
client.py): job documents decode with plain msgpack to exactly the fields of docs/protocol.md,
numpy arrays become gray8/gray16, RLE masks expand correctly, events and results decode. No Redis."""
import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.environ.get("SEGQ_SOURCE_DIR", os.path.dirname(os.path.dirname(HERE)))
sys.path.insert(0, os.path.join(SRC, "clients", "python"))

try:
    import msgpack
    from segq import proto
    from segq.client import image_args
except ImportError as e:  # pragma: no cover
    print("skip: needs python3-msgpack and python3-redis:", e)
    sys.exit(77)

try:
    import numpy as np
except ImportError:  # pragma: no cover
    np = None

JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 60

JOB_FIELDS = {"v", "id", "model", "image", "params", "priority", "deadline_ms", "group", "tenant", "meta"}
IMAGE_FIELDS = {"format", "data", "width", "height"}
PARAM_FIELDS = {"threshold", "min_area", "outputs"}


def unpack(b):
    return msgpack.unpackb(b, raw=False)


class JobEncoding(unittest.TestCase):
    def test_minimal_jpeg_job_has_exactly_required_fields(self):
        doc = unpack(proto.encode_job("job-1", "otsu", JPEG, "jpeg"))
        self.assertEqual(doc, {"v": 1, "id": "job-1", "model": "otsu",
                               "image": {"format": "jpeg", "data": JPEG}})
        self.assertIsInstance(doc["image"]["data"], bytes)  # bin, not str

    def test_full_job_fields_and_types(self):
        raw = bytes(range(6))
        b = proto.encode_job("a.b:c-d_1", "cellseg-unet", raw, "gray8", width=3, height=2,
                             params={"threshold": 0.25, "min_area": 20, "outputs": ["polygons", "mask"]},
                             priority=5, deadline_ms=1700000000123, group="upload-42",
                             tenant="lab7", meta={"user": "ann", "n": [1, 2]})
        doc = unpack(b)
        self.assertEqual(set(doc), JOB_FIELDS)
        self.assertEqual(set(doc["image"]), IMAGE_FIELDS)
        self.assertEqual(set(doc["params"]), PARAM_FIELDS)
        self.assertEqual(doc["v"], 1)
        self.assertEqual(doc["image"], {"format": "gray8", "data": raw, "width": 3, "height": 2})
        self.assertEqual(doc["params"], {"threshold": 0.25, "min_area": 20, "outputs": ["polygons", "mask"]})
        self.assertIsInstance(doc["params"]["threshold"], float)
        self.assertEqual(doc["priority"], 5)
        self.assertEqual(doc["deadline_ms"], 1700000000123)
        self.assertEqual(doc["group"], "upload-42")
        self.assertEqual(doc["tenant"], "lab7")
        self.assertEqual(doc["meta"], {"user": "ann", "n": [1, 2]})
        # Strings are msgpack str (not bin): raw decoding shows the types on the wire.
        rawdoc = msgpack.unpackb(b, raw=True)
        self.assertIsInstance(rawdoc[b"id"], bytes)
        self.assertEqual(proto.decode_job(b)["id"], "a.b:c-d_1")

    def test_keys_are_strings_and_map(self):
        b = proto.encode_job("x", "null", JPEG, "jpeg")
        self.assertEqual(b[0] & 0xF0, 0x80)  # fixmap
        for k in unpack(b):
            self.assertIsInstance(k, str)

    def test_threshold_integer_sent_as_float(self):
        doc = unpack(proto.encode_job("x", "otsu", JPEG, "jpeg", params={"threshold": 1}))
        self.assertEqual(doc["params"]["threshold"], 1.0)
        self.assertIsInstance(doc["params"]["threshold"], float)

    def test_outputs_string_becomes_array(self):
        doc = unpack(proto.encode_job("x", "otsu", JPEG, "jpeg", params={"outputs": "mask"}))
        self.assertEqual(doc["params"]["outputs"], ["mask"])

    def test_rejections_name_the_protocol_code(self):
        cases = [
            (dict(id="", model="otsu"), "invalid_field_value"),
            (dict(id="has space", model="otsu"), "invalid_field_value"),
            (dict(id="x" * 129, model="otsu"), "field_too_large"),
            (dict(id="x", model="m" * 65), "field_too_large"),
            (dict(id=5, model="otsu"), "wrong_field_type"),
            (dict(id="x", model="otsu", params={"threshold": 1.5}), "invalid_field_value"),
            (dict(id="x", model="otsu", params={"outputs": ["boxes"]}), "invalid_field_value"),
            (dict(id="x", model="otsu", params={"min_area": -1}), "wrong_field_type"),
            (dict(id="x", model="otsu", tenant="a/b"), "invalid_field_value"),
            (dict(id="x", model="otsu", group="g" * 129), "field_too_large"),
            (dict(id="x", model="otsu", params={"outputs": []}), "invalid_field_value"),
            (dict(id="x", model="otsu", params={"min_area": 1 << 32}), "invalid_field_value"),
            (dict(id="x", model="otsu", meta={"blob": b"\0" * (64 << 10)}), "field_too_large"),
        ]
        for kw, code in cases:
            with self.assertRaises(proto.ProtocolError, msg=repr(kw)) as cm:
                proto.encode_job(data=JPEG, fmt="jpeg", **kw)
            self.assertEqual(cm.exception.code, code, repr(kw))

    def test_raw_size_checks(self):
        with self.assertRaises(proto.ProtocolError) as cm:
            proto.encode_job("x", "otsu", b"\0" * 5, "gray8", width=3, height=2)
        self.assertEqual(cm.exception.code, "invalid_field_value")
        with self.assertRaises(proto.ProtocolError) as cm:
            proto.encode_job("x", "otsu", b"\0" * 6, "gray16", width=3, height=2)
        self.assertEqual(cm.exception.code, "invalid_field_value")
        with self.assertRaises(proto.ProtocolError) as cm:
            proto.encode_job("x", "otsu", b"\0" * 6, "gray8")
        self.assertEqual(cm.exception.code, "missing_field")
        with self.assertRaises(proto.ProtocolError) as cm:
            proto.encode_job("x", "otsu", b"\0", "gray8", width=0, height=1)
        self.assertEqual(cm.exception.code, "image_empty")
        with self.assertRaises(proto.ProtocolError) as cm:
            proto.encode_job("x", "otsu", b"\0", "gray8", width=20000, height=1)
        self.assertEqual(cm.exception.code, "image_too_large")
        with self.assertRaises(proto.ProtocolError):
            proto.encode_job("x", "otsu", JPEG, "png")


class ImageArgs(unittest.TestCase):
    def test_jpeg_bytes_are_sniffed(self):
        self.assertEqual(image_args(JPEG), (JPEG, "jpeg", None, None))

    def test_unknown_bytes_need_a_format(self):
        with self.assertRaises(proto.ProtocolError):
            image_args(b"\x89PNG\r\n\x1a\n....")
        data, fmt, w, h = image_args(b"\1\2\3\4", fmt="gray8", width=2, height=2)
        self.assertEqual((fmt, w, h), ("gray8", 2, 2))

    def test_path(self):
        import tempfile
        with tempfile.NamedTemporaryFile(suffix=".jpg") as f:
            f.write(JPEG)
            f.flush()
            self.assertEqual(image_args(f.name)[:2], (JPEG, "jpeg"))

    @unittest.skipIf(np is None, "numpy not installed")
    def test_numpy_gray8(self):
        a = np.arange(12, dtype=np.uint8).reshape(3, 4)
        data, fmt, w, h = image_args(a)
        self.assertEqual((fmt, w, h), ("gray8", 4, 3))
        self.assertEqual(data, bytes(range(12)))
        doc = unpack(proto.encode_job("x", "otsu", data, fmt, width=w, height=h))
        self.assertEqual(doc["image"], {"format": "gray8", "data": bytes(range(12)), "width": 4, "height": 3})

    @unittest.skipIf(np is None, "numpy not installed")
    def test_numpy_gray16_is_little_endian(self):
        a = np.array([[0x0102, 0xA0B0], [0xFFFF, 0x0001]], dtype=">u2")  # big-endian input
        data, fmt, w, h = image_args(a)
        self.assertEqual((fmt, w, h), ("gray16", 2, 2))
        self.assertEqual(data, bytes([0x02, 0x01, 0xB0, 0xA0, 0xFF, 0xFF, 0x01, 0x00]))
        # A non-contiguous view (every other column) is sent in its logical row-major order.
        b = np.arange(16, dtype=np.uint16).reshape(4, 4)[:, ::2]
        data, fmt, w, h = image_args(b)
        self.assertEqual((w, h), (2, 4))
        self.assertEqual(np.frombuffer(data, dtype="<u2").tolist(), [0, 2, 4, 6, 8, 10, 12, 14])

    @unittest.skipIf(np is None, "numpy not installed")
    def test_numpy_bad_arrays(self):
        with self.assertRaises(proto.ProtocolError):
            image_args(np.zeros((2, 2, 3), dtype=np.uint8))
        with self.assertRaises(proto.ProtocolError):
            image_args(np.zeros((2, 2), dtype=np.float32))


class Rle(unittest.TestCase):
    def test_decode_starts_with_zero_run(self):
        m = {"encoding": "rle", "width": 4, "height": 2, "counts": [0, 3, 2, 3]}
        self.assertEqual(proto.rle_decode(m), bytes([1, 1, 1, 0, 0, 1, 1, 1]))
        m = {"encoding": "rle", "width": 3, "height": 1, "counts": [3]}
        self.assertEqual(proto.rle_decode(m), b"\0\0\0")
        m = {"encoding": "rle", "width": 3, "height": 1, "counts": [1, 1, 1]}
        self.assertEqual(proto.rle_decode(m), b"\0\1\0")

    def test_decode_rejects_wrong_total(self):
        with self.assertRaises(proto.ProtocolError):
            proto.rle_decode({"encoding": "rle", "width": 3, "height": 1, "counts": [1, 1]})
        with self.assertRaises(proto.ProtocolError):
            proto.rle_decode({"encoding": "png", "width": 1, "height": 1, "counts": [1]})

    def test_roundtrip(self):
        import random
        rnd = random.Random(7)
        for _ in range(50):
            w, h = rnd.randint(1, 20), rnd.randint(1, 20)
            bits = bytes(rnd.random() < 0.4 for _ in range(w * h))
            m = proto.rle_encode(bits, w, h)
            self.assertEqual(proto.rle_decode(m), bits)
            self.assertEqual(sum(m["counts"]), w * h)

    @unittest.skipIf(np is None, "numpy not installed")
    def test_numpy(self):
        m = {"encoding": "rle", "width": 3, "height": 2, "counts": [1, 2, 2, 1]}
        a = proto.rle_to_numpy(m)
        self.assertEqual(a.shape, (2, 3))
        self.assertEqual(a.tolist(), [[0, 1, 1], [0, 0, 1]])


class Documents(unittest.TestCase):
    def test_event_decode(self):
        ev = {"v": 1, "id": "j", "off": 3, "epoch": "6b0f.12", "type": "done", "state": "done",
              "ts_ms": 1, "group": "g", "worker": "w1", "attempt": 1}
        self.assertEqual(proto.decode_event(msgpack.packb(ev, use_bin_type=True)), ev)

    def test_record_decode(self):
        # A finished job's record: the terminal event, the result, and for a dead letter the job.
        ev = {"v": 1, "id": "j", "off": 2, "epoch": "e.1", "type": "failed", "state": "failed"}
        res = {"v": 1, "id": "j", "status": "error", "error": {"code": "model_error", "message": "x"}}
        job = msgpack.packb({"v": 1, "id": "j", "model": "otsu", "image": {"format": "jpeg", "data": b"\xff"}},
                            use_bin_type=True)
        two = msgpack.packb(ev) + msgpack.packb(res)
        self.assertEqual(proto.decode_record(two), (ev, res, None))
        self.assertEqual(proto.decode_record(two + job), (ev, res, job))
        with self.assertRaises(proto.ProtocolError) as cm:
            proto.decode_record(msgpack.packb(ev))
        self.assertEqual(cm.exception.code, "malformed_msgpack")

    def test_error_names_have_one_source(self):
        # Every error code the client sends or compares is in SQ_ERRORS (common/common.h), the
        # list the Lua scripts' ERR table is generated from.
        import re
        from segq import schema
        pkg = os.path.dirname(proto.__file__)
        used = set()
        for name in os.listdir(pkg):
            if name.endswith(".py"):
                with open(os.path.join(pkg, name)) as f:
                    used |= set(re.findall(r'ProtocolError\(\s*"([a-z_]+)"', f.read()))
        self.assertTrue(used)
        self.assertEqual(sorted(used - set(schema.ERRORS)), [])
        self.assertIn("suspected_poison", schema.ERRORS)
        self.assertEqual(schema.KEY["JOB"], "job")
        self.assertEqual(schema.DEFAULT["PREFIX"], "segq")

    def test_result_decode(self):
        res = {"v": 1, "id": "j", "status": "ok", "error": None, "model": "otsu", "width": 4,
               "height": 2, "polygons": [{"points": [0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0],
                                          "area": 1.0, "bbox": [0, 0, 1, 1]}],
               "timings": {"total_us": 10}, "worker": "w", "batch_size": 1, "attempt": 1,
               "meta": {"k": b"\x00"}}
        self.assertEqual(proto.decode_result(msgpack.packb(res, use_bin_type=True)), res)

    def test_lua_cmsgpack_style_event(self):
        # Lua's cmsgpack packs strings as str8/str16 and small floats as doubles; both decode.
        packed = (b"\x83" + b"\xa1v\x01" + b"\xa5state\xd9\x04done" + b"\xa3off\xcd\x00\x02")
        self.assertEqual(proto.decode_event(packed), {"v": 1, "state": "done", "off": 2})

    def test_bad_documents(self):
        with self.assertRaises(proto.ProtocolError) as cm:
            proto.decode_event(b"\xc1")
        self.assertEqual(cm.exception.code, "malformed_msgpack")
        with self.assertRaises(proto.ProtocolError) as cm:
            proto.decode_event(msgpack.packb([1, 2]))
        self.assertEqual(cm.exception.code, "malformed_msgpack")
        with self.assertRaises(proto.ProtocolError) as cm:
            proto.decode_result(msgpack.packb({"v": 2}))
        self.assertEqual(cm.exception.code, "unsupported_version")


if __name__ == "__main__":
    result = unittest.main(exit=False, verbosity=1).result
    n, bad = result.testsRun, len(result.failures) + len(result.errors)
    print("test_client_proto: %d tests, %d failed, %d skipped" % (n, bad, len(result.skipped)))
    sys.exit(1 if bad or n == 0 else 0)
