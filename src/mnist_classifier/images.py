"""Any image a user hands over -> its pixels: decoded safely, then grey levels 0..1.

    load_image("digit.png")   # a file path, encoded bytes or a PIL image -> numpy array
    grayscale(array)          # any numeric (H, W[, C]) array -> float32 (H, W) 0..1, transparency resolved

Owns what a file may do to us (size limits before decoding, PIL's many failure modes as one
ImageError naming the input, EXIF rotation) and what its pixels mean (any dtype's scale,
colour by luminance, a transparent background told from the ink). preprocess.py takes the
grey levels from here and frames the digit as MNIST does.
"""
from __future__ import annotations

import io
import os
from contextlib import contextmanager

import cv2
import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from .errors import ImageError

MAX_SIDE = 4096  # larger inputs are refused: nothing a digit needs, and bombs stay out
# What a file object may hold: an uncompressed 16-bit RGBA picture of MAX_SIDE x MAX_SIDE (128 MiB)
# and its header; an endless stream stops here rather than at the memory's end.
MAX_FILE_BYTES = MAX_SIDE * MAX_SIDE * 8 + 2**20
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R 601, as PIL's "L" mode
IMAGE_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")  # the first bytes of every PNG and JPEG file
# and of other kinds PIL reads for the library and `predict` (serve takes PNG and JPEG only); BMP's
# "BM" and WebP's "RIFF" are left out: plain text and sound files start so too
FORMAT_SIGNATURES = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG", b"GIF8": "GIF",
                     b"II*\x00": "TIFF", b"MM\x00*": "TIFF"}


def starts_as_png_or_jpeg(start: bytes) -> bool:
    """Whether data starting so is a PNG or JPEG, or the first bytes of one cut off (b"\\x89PN")."""
    return _starts_as(start, IMAGE_SIGNATURES) is not None


def _starts_as(start: bytes, signatures) -> bytes | None:
    """The signature `start` begins with, or that it is the cut-off beginning of; None: neither."""
    return next((sign for sign in signatures if start and (start.startswith(sign) or sign.startswith(start))), None)


# ---------------------------------------------------------------- reading files


PIL_IMAGE = "the image"  # what the messages call a PIL image handed over in memory


def load_image(source) -> np.ndarray:
    """File path, encoded bytes or PIL image -> numpy array (modes normalised)."""
    if isinstance(source, np.ndarray):
        return source
    if isinstance(source, Image.Image):
        with _decoding(PIL_IMAGE):
            _check_size(source.width, source.height)  # before any pixel of an Image.open()ed file is decoded
            try:
                source.load()  # a lazily opened file's pixels: truncated data fails here
            except ValueError as error:
                if "closed" not in str(error):
                    raise
                raise ImageError(f"cannot read the PIL image ({error}); pass it before it is closed, "
                                 "or pass image.copy()") from None
            return _pil_to_array(source, PIL_IMAGE)
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise ImageError("empty image data (0 bytes); pass the bytes of an image file")
        name, file = f"image data ({len(source)} bytes)", io.BytesIO(bytes(source))
    elif isinstance(source, (str, os.PathLike)):
        name = os.fspath(source)
        if not str(name).strip():  # Path("") is ".", a folder
            raise ImageError("empty image path; name an image file")
        file = os.path.expanduser(name)  # as load() expands a model's path; the message keeps the name given
        if os.path.isdir(file):
            raise ImageError(f"{name} is a folder, not an image file; name the images in it")
        if not os.path.exists(file):
            raise ImageError(f"{name}: image file not found; check the path")
        if not os.path.isfile(file):  # /dev/zero, a pipe: no end, or no header to check the size by
            raise ImageError(f"{name} is not a regular file (a device, pipe or socket); save the image to a file first")
    else:
        raise ImageError(f"cannot read an image from {type(source).__name__}; pass a "
                         "file path, encoded bytes, a PIL image or a numpy array")
    # Image.open reads only the header, so the size is known before any pixel is
    # decoded: PIL's own bomb check raises in open(), ours before load().
    with _decoding(name, file), Image.open(file) as im:
        return _pil_to_array(im, name)


def _first_bytes(file: str | io.BytesIO | None) -> bytes:
    """The start of a path's file or of bytes in memory: what the file says it is, when PIL cannot tell."""
    if file is None:  # nothing to look at: take it for some other kind of file
        return b"-"
    if isinstance(file, io.BytesIO):
        return file.getbuffer()[:8].tobytes()
    try:
        with open(file, "rb") as opened:
            return opened.read(8)
    except OSError:  # unreadable: PIL's open says so in its own words
        return b"-"


@contextmanager
def _decoding(name: str, file: str | io.BytesIO | None = None):
    """Turn PIL's many failure modes into one ImageError that names the input.

    PIL's DecompressionBombWarning (over ~89 Mpx) is left alone, not silenced here: catching
    warnings swaps the process's filter list, which threads sharing a Reader would race on and
    leave changed; MAX_SIDE refuses such a picture right after anyway, and the command line
    filters that warning out itself (errors.hide_image_size_warning). `file`: the input, whose first
    bytes, read only when PIL cannot tell what it is, tell an empty file and a damaged image (PNG,
    JPEG, GIF, TIFF) from another kind of file."""
    try:
        yield
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):  # the warning: when warnings are errors
        raise ImageError(f"{name}: image larger than {MAX_SIDE} pixels a side; "
                         "resize it first") from None
    except UnidentifiedImageError:
        start = _first_bytes(file)
        if not start:
            raise ImageError(f"{name} is an empty file (0 bytes); save the image again") from None
        sign = _starts_as(start, FORMAT_SIGNATURES)
        if sign is not None:  # one, damaged or cut off before PIL could read its header
            raise ImageError(f"{name}: the {FORMAT_SIGNATURES[sign]} file is truncated or corrupt; "
                             "save it again") from None
        raise ImageError(f"{name} is not an image file PIL can read; "
                         "use a PNG or JPEG") from None
    except (OSError, ValueError, SyntaxError, EOFError) as error:
        # Truncated or corrupt data surfaces as any of these, depending on the codec.
        raise ImageError(f"{name}: the file is truncated or corrupt ({error}); save it again") from None


def _pil_to_array(im: Image.Image, name: str) -> np.ndarray:
    _check_size(im.width, im.height, name)
    _refuse_several_frames(im, name)
    im = _upright(im)
    wanted = None
    if im.has_transparency_data and not _keyed_16_bit(im):  # an alpha band, or a tRNS / GIF colour key
        if im.mode not in ("LA", "RGBA"):
            wanted = "RGBA"
    elif im.mode not in ("1", "L", "I", "F", "RGB") and not im.mode.startswith("I;16"):
        wanted = "RGB"  # palette, CMYK, YCbCr...: colours are what we need
    if wanted is not None:
        try:
            im = im.convert(wanted)
        except ValueError:  # a mode PIL holds but cannot convert (premultiplied "La"): no damaged file
            raise ImageError(f"{name}: PIL cannot convert its pixel mode {im.mode!r} to {wanted}; "
                             "pass it in mode L, RGB or RGBA") from None
    return np.array(im)


def _refuse_several_frames(im: Image.Image, name: str) -> None:
    """An animation or a multi-page TIFF holds several pictures; reading the first alone dropped the
    others without a word (helper-88). A phone's MPO JPEG keeps extra views of one photo: its first is it."""
    try:
        frames = getattr(im, "n_frames", 1)  # counting walks every frame's header
    except Exception as error:  # noqa: BLE001 (a cut-off GIF or TIFF fails in PIL's own words: TypeError, IndexError...)
        raise ImageError(f"{name}: the file is truncated or corrupt ({type(error).__name__} counting its frames); "
                         "save it again") from None
    if frames > 1 and im.format != "MPO":
        one = "pass one frame: image.seek(i), then image.copy()" if name == PIL_IMAGE else \
            "save each drawing as an image of its own"
        raise ImageError(f"{name} holds {frames} frames (an animation or a multi-page file); {one}")


def _keyed_16_bit(im: Image.Image) -> bool:
    """A 16-bit image with a colour key (PNG tRNS): read its values as they are, the key's
    colour being the paper's (no opaque pixel can have it). PIL's RGBA conversion would clip
    every 16-bit value to 255 and leave nothing visible."""
    return im.mode.startswith("I") and im.info.get("transparency") is not None


def _upright(im: Image.Image) -> Image.Image:
    """Apply the EXIF rotation phone photos carry; without one, no copy (~0.2 ms a canvas)."""
    im.load()  # a PNG may keep its EXIF after the pixels
    if im.getexif().get(ExifTags.Base.Orientation, 1) == 1:
        return im
    return ImageOps.exif_transpose(im)


def _check_size(width: int, height: int, name: str = "the image") -> None:
    """Refuse what is too big to be a digit (and could exhaust memory) or empty."""
    if width > MAX_SIDE or height > MAX_SIDE:
        raise ImageError(f"{name}: image larger than {MAX_SIDE} pixels a side "
                         f"(got {width}x{height}); resize it first")
    if width < 1 or height < 1:
        raise ImageError(f"{name} is empty ({width}x{height} pixels)")


# ------------------------------------------------------------ pixels -> grey levels


def grayscale(array: np.ndarray) -> np.ndarray:
    """(H,W[,C]) array of any numeric dtype -> float32 (H,W) 0..1, alpha composited."""
    array = array[:, :, None] if array.ndim == 2 else array
    if array.ndim != 3 or array.shape[2] not in (1, 2, 3, 4):
        first = array.ndim == 3 and array.shape[0] in (1, 3, 4) and min(array.shape[1:]) > 4
        hint = ": channels first? np.moveaxis(image, 0, -1) puts them last" if first else ""
        raise ImageError(f"image array has shape {array.shape}; expected (H, W) or (H, W, C) with C in 1..4{hint}")
    _check_size(array.shape[1], array.shape[0])
    unit = _to_unit_float(array)
    has_alpha = unit.shape[2] in (2, 4)
    color, alpha = (unit[..., :-1], unit[..., -1]) if has_alpha else (unit, None)
    gray = color[..., 0] if color.shape[2] == 1 else color @ _LUMA
    return gray if alpha is None else _composite(gray, alpha)


def _to_unit_float(array: np.ndarray) -> np.ndarray:
    """Scale to float32 0..1 as the values imply: the one place every front end's pixels are scaled.

    Integers are scaled by the smallest full scale that holds them (1, 255, 65535), whatever
    their container: a 0/1 mask is a mask, 8-bit values in uint16 or int64 are 8-bit. Going by
    the dtype instead read those as near-black, i.e. "empty": a 0/1 uint8 mask has a contrast
    of 1/255, and a genuine 16-bit image peaking at <= 255 has under 0.4% of full scale, both
    far below MIN_CONTRAST. So this rule changes only what would have had no visible ink,
    and genuine 16-bit images (any pixel above 255, e.g. 8-bit x 257) read as before."""
    kind = array.dtype.kind
    if kind == "b":
        return array.astype(np.float32)
    if kind not in "iuf":
        raise ImageError(f"image pixels have type {array.dtype}; use numbers")
    if kind == "f" and not np.isfinite(array).all():
        raise ImageError("image contains NaN or infinite values; clean the array first")
    lo, hi = float(array.min()), float(array.max())
    if lo >= 0 and hi <= 1:  # floats 0..1, or an integer 0/1 mask
        return array.astype(np.float32)
    if lo >= 0 and hi <= 255:  # 8-bit values, in any container
        return array.astype(np.float32) / np.float32(255)
    if lo >= 0 and hi <= 65535 and kind in "iu":  # 16-bit: uint16, or PIL's "I" mode for 16-bit PNGs
        return array.astype(np.float32) / np.float32(65535)
    # Anything else: no scale is implied, so use the values' own range. Dividing by
    # the peak first keeps huge magnitudes from overflowing the subtraction.
    scaled = array.astype(np.float64) / max(abs(lo), abs(hi))
    lo, hi = scaled.min(), scaled.max()
    if lo == hi:  # uniform (as far as float64 can tell): no ink, whatever the scale
        return np.zeros(array.shape, np.float32)
    return ((scaled - lo) / (hi - lo)).astype(np.float32)


def _composite(gray: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Put transparent pixels on the background the opaque ones imply."""
    if alpha.min() >= 1.0:
        return gray  # opaque RGBA behaves exactly like RGB
    # A canvas export is strokes on a transparent background; a scan with its paper removed
    # (or made a colour key) is ink whose soft edges keep some of the paper's colour. The
    # background must contrast with the ink: dark ink goes on white, light ink on black; then
    # the usual polarity detection takes over.
    return alpha * gray + (1 - alpha) * np.float32(1.0 if _ink_is_dark(gray, alpha) else 0.0)


def _ink_is_dark(gray: np.ndarray, alpha: np.ndarray) -> bool:
    """Where the opaque part meets the transparent one, its colour leans to the paper's, so
    edges paler than the inside mean dark ink on pale paper (and the other way round). The
    opaque levels' mean cannot tell: pale edges may outnumber a dark core. Strokes of one
    colour (edges no different) fall back to that mean."""
    opaque = (alpha >= 0.5).astype(np.uint8)
    inside = cv2.erode(opaque, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_REPLICATE).astype(bool)
    edge = opaque.astype(bool) & ~inside
    if inside.any() and edge.any():
        difference = float(gray[edge].mean()) - float(gray[inside].mean())
        if abs(difference) > 0.05:
            return difference > 0
    weight = float(alpha.sum())
    return (float((gray * alpha).sum()) / weight if weight > 0 else 0.0) < 0.5
