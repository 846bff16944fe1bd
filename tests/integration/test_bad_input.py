#!/usr/bin/python3
"""Bad input against a real segq-worker: every malformed job gets an error result with its
specific code (docs/protocol.md "Error codes"), good jobs queued between the bad ones still
complete, and the worker process survives all of it."""
import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import segq_testlib as tl  # noqa: E402

tl.require_worker()
import segq  # noqa: E402

P = "bad"


def jpeg_with_size(width, height):
    """A small valid JPEG whose SOF0 header is patched to claim width x height."""
    data = bytearray(tl.make_jpeg(16, 16))
    i = 2
    while i < len(data) - 9:
        if data[i] != 0xFF:
            raise ValueError("no marker at %d" % i)
        marker = data[i + 1]
        seglen = (data[i + 2] << 8) | data[i + 3]
        if marker in (0xC0, 0xC1, 0xC2):
            data[i + 5:i + 7] = bytes([(height >> 8) & 0xFF, height & 0xFF])
            data[i + 7:i + 9] = bytes([(width >> 8) & 0xFF, width & 0xFF])
            return bytes(data)
        i += 2 + seglen
    raise ValueError("no SOF marker")


def cases():
    """[(queue id, payload bytes, acceptable error codes)]."""
    good_jpeg = tl.make_jpeg(32, 32)
    doc = tl.job_doc
    out = []

    def add(name, payload, *codes):
        if isinstance(payload, dict):
            payload = tl.pack(payload)
        out.append(("bad-" + name, payload, set(codes)))

    add("garbage", b"\x00\xff\xfe garbage \x13\x37", "malformed_msgpack")
    add("empty-payload", b"", "malformed_msgpack")
    add("not-a-map", tl.pack([1, 2, 3]), "malformed_msgpack")
    add("trailing-bytes", tl.pack(doc("bad-trailing-bytes", "null", good_jpeg)) + b"\x01", "malformed_msgpack")
    add("truncated-msgpack", tl.pack(doc("bad-truncated-msgpack", "null", good_jpeg))[:-7], "malformed_msgpack")
    add("truncated-jpeg", doc("bad-truncated-jpeg", "null", good_jpeg[:len(good_jpeg) // 2]), "image_decode_failed")
    add("empty-jpeg", doc("bad-empty-jpeg", "null", b""), "image_decode_failed")
    add("not-a-jpeg", doc("bad-not-a-jpeg", "null", b"this is not a jpeg" * 10), "image_decode_failed")
    add("jpeg-huge-header", doc("bad-jpeg-huge-header", "null", jpeg_with_size(20000, 20000)), "image_too_large")
    add("jpeg-zero-height", doc("bad-jpeg-zero-height", "null", jpeg_with_size(16, 0)), "image_empty")
    # docs/protocol.md (since dc6b588): raw sizes use the same codes as decoded JPEGs.
    add("raw-zero", doc("bad-raw-zero", "null", b"", fmt="gray8", width=0, height=0), "image_empty")
    add("raw-zero-height", doc("bad-raw-zero-height", "null", b"", fmt="gray16", width=7, height=0),
        "image_empty")
    add("raw-wide", doc("bad-raw-wide", "null", b"\x00" * 20000, fmt="gray8", width=20000, height=1),
        "image_too_large")
    add("raw-tall-header", doc("bad-raw-tall-header", "null", b"\x00" * 16, fmt="gray8", width=1, height=20000),
        "image_too_large")
    add("raw-size-mismatch", doc("bad-raw-size-mismatch", "null", b"\x00" * 10, fmt="gray8", width=4, height=4),
        "invalid_field_value")
    add("raw16-odd", doc("bad-raw16-odd", "null", b"\x00" * 16, fmt="gray16", width=4, height=4),
        "invalid_field_value")
    add("raw-no-width", doc("bad-raw-no-width", "null", b"\x00" * 16, fmt="gray8", height=16), "missing_field")
    add("format-unknown", doc("bad-format-unknown", "null", good_jpeg, fmt="png"), "invalid_field_value")
    add("width-str", doc("bad-width-str", "null", b"\x00" * 16, fmt="gray8", width="4", height=4),
        "wrong_field_type")
    add("data-str", {"v": 1, "id": "bad-data-str", "model": "null", "image": {"format": "jpeg", "data": "abc"}},
        "wrong_field_type")
    add("image-not-map", {"v": 1, "id": "bad-image-not-map", "model": "null", "image": [1, 2]},
        "wrong_field_type")
    add("priority-str", doc("bad-priority-str", "null", good_jpeg, priority="high"), "wrong_field_type")
    add("deadline-negative", doc("bad-deadline-negative", "null", good_jpeg, deadline_ms=-5), "wrong_field_type")
    add("threshold-str", doc("bad-threshold-str", "null", good_jpeg, params={"threshold": "0.5"}),
        "wrong_field_type")
    add("threshold-range", doc("bad-threshold-range", "null", good_jpeg, params={"threshold": 1.5}),
        "invalid_field_value")
    add("outputs-unknown", doc("bad-outputs-unknown", "null", good_jpeg, params={"outputs": ["edges"]}),
        "invalid_field_value")
    add("outputs-empty", doc("bad-outputs-empty", "null", good_jpeg, params={"outputs": []}),
        "invalid_field_value")
    add("outputs-too-many", doc("bad-outputs-too-many", "null", good_jpeg, params={"outputs": ["mask"] * 9}),
        "field_too_large")
    add("meta-too-large", doc("bad-meta-too-large", "null", good_jpeg, meta={"blob": b"x" * 70000}),
        "field_too_large")
    add("version-2", dict(doc("bad-version-2", "null", good_jpeg), v=2), "unsupported_version")
    add("version-str", dict(doc("bad-version-str", "null", good_jpeg), v="1"), "wrong_field_type")
    no_v = doc("bad-no-version", "null", good_jpeg)
    del no_v["v"]
    add("no-version", no_v, "missing_field")
    add("no-image", {"v": 1, "id": "bad-no-image", "model": "null"}, "missing_field")
    add("no-model", {"v": 1, "id": "bad-no-model", "image": {"format": "jpeg", "data": good_jpeg}},
        "missing_field")
    add("nil-image", {"v": 1, "id": "bad-nil-image", "model": "null", "image": None}, "missing_field")
    add("no-id", {"v": 1, "model": "null", "image": {"format": "jpeg", "data": good_jpeg}}, "missing_field")
    add("id-mismatch", doc("someone-else", "null", good_jpeg), "id_mismatch")
    add("tenant-bad-alphabet", doc("bad-tenant-bad-alphabet", "null", good_jpeg, tenant="a b"),
        "invalid_field_value")
    add("tenant-too-long", doc("bad-tenant-too-long", "null", good_jpeg, tenant="t" * 65), "field_too_large")
    return out


class BadInput(unittest.TestCase):
    def test_each_bad_job_gets_its_error_and_the_worker_survives(self):
        with tl.RedisServer() as rs:
            r = rs.client()
            with tl.Worker(rs.url, prefix=P, worker_id="bad-w1") as w:
                w.wait_ready(r)
                # The first heartbeat registers the served models; unknown models are refused
                # at enqueue from then on.
                tl.wait_until(lambda: r.sismember(tl.key(P, "models:served"), "null"), 10,
                              what="models:served has null")
                c = segq.Client(rs.url, prefix=P)
                good_jpeg = tl.make_jpeg(48, 48)
                bad = cases()
                good_ids = []
                for n, (qid, payload, _) in enumerate(bad):
                    self.assertEqual(tl.enqueue_raw(r, P, qid, "null", payload), 1, qid)
                    gid = "good-%03d" % n
                    c.submit(good_jpeg, "otsu" if n % 2 else "null", id=gid)
                    good_ids.append(gid)

                # Unknown model: refused at enqueue with an unknown_model error result.
                uid = c.submit(good_jpeg, "no-such-model", id="bad-unknown-model")
                self.assertEqual(c.last_enqueue[uid], segq.ENQUEUE_REJECTED)

                all_ids = [b[0] for b in bad] + good_ids + [uid]
                res = tl.wait_for_results(r, P, all_ids, timeout=60)

                wrong = []
                for qid, _, codes in bad:
                    x = res[qid]
                    code = (x.get("error") or {}).get("code")
                    print("  %-28s %-22s %s" % (qid, code, (x.get("error") or {}).get("message")))
                    if x.get("status") != "error" or code not in codes:
                        wrong.append("%s: expected %s, got status=%r error=%r"
                                     % (qid, "/".join(sorted(codes)), x.get("status"), x.get("error")))
                        continue
                    if x.get("id") != qid:
                        wrong.append("%s: result id is %r" % (qid, x.get("id")))
                    if not (x["error"].get("message") or ""):
                        wrong.append("%s: empty error message" % qid)
                    if x.get("polygons"):
                        wrong.append("%s: error result has polygons" % qid)
                    st = tl.job_status(r, P, qid)
                    if st.get("state") != "failed" or st.get("error") != code:
                        wrong.append("%s: terminal event %r" % (qid, st))
                self.assertEqual(wrong, [], "\n" + "\n".join(wrong))

                x = res[uid]
                self.assertEqual((x["status"], x["error"]["code"]), ("error", "unknown_model"))
                ev = tl.record_event(r, P, uid)
                self.assertEqual((ev["off"], ev["type"], ev["error"]), (1, "failed", "unknown_model"))

                for gid in good_ids:
                    self.assertEqual(res[gid]["status"], "ok", (gid, res[gid].get("error")))

                self.assertTrue(w.alive(), "worker died:\n" + w.log_tail())
                # Still serving after all that.
                last = c.submit(good_jpeg, "otsu", id="good-after")
                self.assertEqual(c.wait(last, timeout=20)["status"], "ok")

                st = tl.stats(r, P)
                self.assertEqual(st.get("failed"), len(bad) + 1, st)
                self.assertEqual(st.get("done"), len(good_ids) + 1, st)
                self.assertEqual(tl.inflight_lists(r, P), {})
                w.sigterm()
                self.assertEqual(w.wait(20), 0, w.log_tail())


if __name__ == "__main__":
    tl.run_tests()
