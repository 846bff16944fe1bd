"""segq.images: what a job's image may be on the client side, and its lossless conversion to what
protocol v1 carries (docs/protocol.md "Job": jpeg, gray8, gray16, rgb8, rgb16). JPEG bytes go as
they are; PNG and TIFF (bytes or a path), numpy arrays and PIL images are decoded here into the raw
formats, sample for sample: nothing is re-encoded as JPEG, 16-bit data stays 16-bit, RGB stays RGB.
numpy, Pillow and tifffile are imported only when an input needs them (the `images` extra;
Debian: python3-numpy, python3-pil, python3-tifffile)."""
from __future__ import annotations

import os
from typing import Any, NamedTuple, Optional, Union

from .proto import ProtocolError, RAW_BPP


class WireImage(NamedTuple):
    """An image as a job carries it. width/height are None for jpeg (the JPEG has them). Passing
    one to submit sends it as it is (e.g. decoded once up front, as the command line does)."""
    data: bytes
    fmt: str
    width: Optional[int]
    height: Optional[int]

    def to_array(self) -> Any:
        """The samples as a numpy array ((H, W) or (H, W, 3); uint8 or uint16); JPEG decoded
        with Pillow."""
        import numpy as np
        if self.fmt == "jpeg":
            import io
            from PIL import Image
            return np.array(Image.open(io.BytesIO(self.data)))
        if self.fmt.endswith("16"):
            a = np.frombuffer(self.data, dtype="<u2").astype(np.uint16)
        else:
            a = np.frombuffer(self.data, dtype=np.uint8)
        return a.reshape((self.height, self.width, 3) if self.fmt.startswith("rgb")
                         else (self.height, self.width))


ImageInput = Union[bytes, bytearray, memoryview, str, "os.PathLike[str]", WireImage, Any]

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF


def sniff(data: bytes) -> Optional[str]:
    """'jpeg', 'png', 'tiff' or None, from the first bytes."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == PNG_MAGIC:
        return "png"
    if data[:4] in TIFF_MAGICS:
        return "tiff"
    return None


def _need(what: str, modules: str) -> ProtocolError:
    return ProtocolError("unsupported_image_format",
                         "%s needs %s (pip install 'segq[images]'; Debian: python3-numpy "
                         "python3-pil python3-tifffile)" % (what, modules))


def _is_array(x: Any) -> bool:
    return hasattr(x, "dtype") and hasattr(x, "shape") and hasattr(x, "tobytes")


def _is_pil(x: Any) -> bool:
    return hasattr(x, "mode") and hasattr(x, "size") and hasattr(x, "getbands")


def from_array(a: Any, what: str = "array") -> WireImage:
    """A numpy array as a raw image: (H, W) gray, (H, W, 3) RGB, (H, W, 4) RGBA (alpha dropped);
    uint8 -> gray8/rgb8, uint16 -> gray16/rgb16; bool and other integer types whose values fit
    in 16 bits are converted without loss. Anything that would lose information (floats, negative
    or > 65535 values, stacks of planes) is refused with a message saying what to do."""
    import numpy as np
    a = np.asarray(a)
    shape = tuple(int(n) for n in a.shape)
    if a.ndim == 3 and shape[2] == 1:
        a = a[:, :, 0]
    elif a.ndim == 3 and shape[2] == 4:
        a = a[:, :, :3]  # alpha is not image content for segmentation
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] == 3)):
        raise ProtocolError("invalid_field_value",
                            "%s has shape %r: pass one plane, (height, width) gray or (height, "
                            "width, 3) RGB (pick a page, channel or z-slice of a stack first)"
                            % (what, shape))
    if a.dtype == np.bool_:
        a = a.astype(np.uint8)
    elif a.dtype.kind in "iu" and a.dtype not in (np.uint8, np.uint16):
        lo, hi = (int(a.min()), int(a.max())) if a.size else (0, 0)
        if lo < 0 or hi > 65535:
            raise ProtocolError("invalid_field_value",
                                "%s is %s with values in [%d, %d]: segq takes 8- or 16-bit "
                                "unsigned samples; rescale to uint16 first" % (what, a.dtype, lo, hi))
        a = a.astype(np.uint8 if hi <= 255 and a.dtype.itemsize == 1 else np.uint16)
    elif a.dtype.kind not in "u":
        raise ProtocolError("invalid_field_value",
                            "%s is %s: segq takes 8- or 16-bit unsigned samples; convert it "
                            "(e.g. scale a float image to uint16) first" % (what, a.dtype))
    h, w = int(a.shape[0]), int(a.shape[1])
    rgb = a.ndim == 3
    if a.dtype == np.uint8:
        fmt = "rgb8" if rgb else "gray8"
        data = np.ascontiguousarray(a).tobytes()
    else:
        fmt = "rgb16" if rgb else "gray16"
        # 16-bit samples are little-endian on the wire whatever the host or array byte order.
        data = np.ascontiguousarray(a, dtype="<u2").tobytes()
    return WireImage(data, fmt, w, h)


def from_pil(im: Any, what: str = "PIL image") -> WireImage:
    """A PIL image as a raw image, by mode: L/1/LA/P-with-gray-palette gray8, I;16* gray16, I
    gray16 when its values fit, RGB/RGBA/P/CMYK/YCbCr rgb8 (alpha dropped)."""
    import numpy as np
    mode = im.mode
    if mode in ("L", "1", "LA", "La"):
        return from_array(np.array(im.convert("L"), dtype=np.uint8), what)
    if mode.startswith("I;16"):
        return from_array(np.array(im, dtype=np.uint16), what)
    if mode == "I":
        return from_array(np.array(im), what)
    if mode in ("RGB", "RGBA", "RGBX", "RGBa", "CMYK", "YCbCr", "LAB", "HSV", "P", "PA"):
        a = np.array(im.convert("RGB"), dtype=np.uint8)
        if mode in ("P", "PA") and (a[:, :, 0] == a[:, :, 1]).all() and (a[:, :, 1] == a[:, :, 2]).all():
            a = a[:, :, 0]  # a gray palette: gray8 says the same in a third of the bytes
        return from_array(a, what)
    raise ProtocolError("invalid_field_value",
                        "%s has mode %s: segq takes 8- or 16-bit gray or RGB samples; convert it "
                        "first" % (what, mode))


def _decode_tiff(data: bytes, what: str) -> WireImage:
    try:
        import tifffile
    except ImportError:
        tifffile = None
    if tifffile is not None:
        import io
        try:
            with tifffile.TiffFile(io.BytesIO(data)) as tf:
                series = tf.series[0]
                a = series.asarray()
                axes = series.axes
        except Exception as e:
            raise ProtocolError("image_decode_failed", "%s: not a readable TIFF: %s" % (what, e))
        # Samples last: tifffile's "S" axis is the colour samples (RGB), "YX" the plane.
        if axes.endswith("YXS") or axes == "YX":
            return from_array(a, what)
        if axes == "SYX" and a.shape[0] in (3, 4):  # planar RGB(A)
            return from_array(a.transpose(1, 2, 0), what)
        raise ProtocolError("invalid_field_value",
                            "%s is a TIFF of shape %r (axes %s): pass one plane (a 2-D gray or "
                            "RGB image); read the stack with tifffile and send each plane"
                            % (what, tuple(a.shape), axes))
    try:
        return _decode_pil(data, what)
    except ProtocolError as e:
        if e.code == "unsupported_image_format":
            raise _need("%s (TIFF)" % what, "tifffile or Pillow")
        raise


def _decode_pil(data: bytes, what: str) -> WireImage:
    try:
        from PIL import Image
    except ImportError:
        raise _need(what, "Pillow")
    import io
    try:
        im = Image.open(io.BytesIO(data))
        im.load()
    except Exception as e:
        raise ProtocolError("image_decode_failed", "%s: cannot decode: %s" % (what, e))
    if getattr(im, "n_frames", 1) > 1:
        raise ProtocolError("invalid_field_value",
                            "%s has %d frames: pass one plane" % (what, im.n_frames))
    return from_pil(im, what)


def from_bytes(data: bytes, what: str = "image bytes") -> WireImage:
    """Encoded bytes: JPEG as is, PNG and TIFF decoded (lossless) into a raw format."""
    kind = sniff(data)
    if kind == "jpeg":
        return WireImage(data, "jpeg", None, None)
    if kind == "png":
        return _decode_pil(data, what + " (PNG)")
    if kind == "tiff":
        return _decode_tiff(data, what)
    raise ProtocolError("unsupported_image_format",
                        "%s are not JPEG, PNG or TIFF; raw samples need fmt='gray8', 'gray16', "
                        "'rgb8' or 'rgb16' with width and height" % what)


def to_wire(image: ImageInput, fmt: Optional[str] = None, width: Optional[int] = None,
            height: Optional[int] = None) -> WireImage:
    """(data, fmt, width, height) for a job's image given: JPEG/PNG/TIFF bytes or a path to such
    a file, a numpy array, a PIL image, or raw samples with fmt ('gray8', 'gray16', 'rgb8',
    'rgb16') and width/height, or a WireImage (sent as it is)."""
    if isinstance(image, WireImage):
        return image
    if isinstance(image, (str, os.PathLike)):
        path = os.fspath(image)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise ProtocolError("invalid_field_value", "cannot read image %s: %s" % (path, e.strerror))
        if fmt is not None:
            return _raw(data, fmt, width, height)
        return from_bytes(data, path)
    if _is_array(image):
        return from_array(image)
    if _is_pil(image):
        return from_pil(image)
    if isinstance(image, (bytearray, memoryview)):
        image = bytes(image)
    if not isinstance(image, bytes):
        raise ProtocolError("wrong_field_type",
                            "image must be bytes, a path, a numpy array or a PIL image, got %s"
                            % type(image).__name__)
    if fmt is not None:
        return _raw(image, fmt, width, height)
    return from_bytes(image)


def _raw(data: bytes, fmt: str, width: Optional[int], height: Optional[int]) -> WireImage:
    if fmt == "jpeg":
        return WireImage(data, fmt, None, None)
    if fmt not in RAW_BPP:
        raise ProtocolError("invalid_field_value", "fmt must be jpeg, %s, got %r"
                            % (", ".join(sorted(RAW_BPP)), fmt))
    return WireImage(data, fmt, width, height)
