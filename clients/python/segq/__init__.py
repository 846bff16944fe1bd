"""segq: Python client for the segq segmentation queue (protocol v1, docs/protocol.md).
Submit images, wait for results, follow events, read queue statistics."""
from .client import (DEFAULT_PREFIX, DEFAULT_URL, ENQUEUE_HAS_RESULT, ENQUEUE_PENDING,
                     ENQUEUE_QUEUED, ENQUEUE_REJECTED, Client, NotReplicated, SegqError, Timeout,
                     load_script)
from .proto import (ProtocolError, decode_event, decode_result, encode_job, rle_decode,
                    rle_to_numpy)

__all__ = ["Client", "SegqError", "NotReplicated", "Timeout", "ProtocolError", "load_script", "encode_job",
           "decode_result", "decode_event", "rle_decode", "rle_to_numpy", "DEFAULT_URL",
           "DEFAULT_PREFIX", "ENQUEUE_QUEUED", "ENQUEUE_PENDING", "ENQUEUE_HAS_RESULT",
           "ENQUEUE_REJECTED"]
