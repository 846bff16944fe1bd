"""segq: Python client for the segq segmentation queue (protocol v1, docs/protocol.md).
Submit images, wait for results, follow events, cancel jobs, act on dead letters, read queue
statistics, and mint the channel tokens segq-bridge checks (segq.tokens)."""
from .client import (DEFAULT_PREFIX, DEFAULT_URL, ENQUEUE_CANCELED, ENQUEUE_FINISHED,
                     ENQUEUE_HAS_RESULT, ENQUEUE_PENDING, ENQUEUE_QUEUED, ENQUEUE_REJECTED, Client,
                     JobLost, SegqError, Timeout, load_script)
from .proto import (ProtocolError, decode_event, decode_record, decode_result, encode_job,
                    rle_decode, rle_to_numpy)
from . import tokens

__all__ = ["Client", "SegqError", "Timeout", "JobLost", "ProtocolError", "load_script",
           "encode_job", "decode_result", "decode_event", "decode_record", "rle_decode",
           "rle_to_numpy", "DEFAULT_URL", "DEFAULT_PREFIX", "ENQUEUE_QUEUED", "ENQUEUE_PENDING",
           "ENQUEUE_FINISHED", "ENQUEUE_HAS_RESULT", "ENQUEUE_REJECTED", "ENQUEUE_CANCELED",
           "tokens"]
