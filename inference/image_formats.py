"""Which files are images and what their first bytes say, before Pillow is handed them: the image extensions, the
formats Pillow may open (uploads are untrusted), the ISO base media brands that name a HEIC or AVIF photo, and a
JPEG's headers (its frame, for the plain decode path, and its count of scans).

Read from the bytes alone, so that a file is named or refused without a decoder running on it.
"""

from __future__ import annotations

import functools
import os

from PIL import Image

from .image_limits import ImageDecodeError, ImageTooLarge

# Scans a JPEG may have. Each scan of a progressive JPEG passes over every block of its components, and a scan of
# nothing but end-of-band runs takes a few bytes: a small file of such scans at the pixel limit keeps a decoding
# thread busy for minutes (docs/deploy.md, the refusals). Encoders write a few dozen at most.
MAX_JPEG_SCANS = 100
_START_OF_SCAN_MARKER = b"\xff\xda"
# The file names of DECODABLE_FORMATS (below), which the scorer and training's folder reader pick up: every name
# Pillow registers for them, or a file it reads would be skipped as "not an image" (a browser saves JPEGs as .jfif).
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".apng", ".bmp", ".dib", ".gif", ".tif", ".tiff", ".webp"}
    | {".ppm", ".pgm", ".pbm", ".pnm", ".pfm", ".tga", ".icb", ".vda", ".vst", ".qoi", ".avif", ".avifs"}
    | {".jp2", ".j2k", ".j2c", ".jpc", ".jpf", ".jpx"}
)


def is_image_name(name: str) -> bool:
    """Whether a file name is an image's: an image extension, and not the AppleDouble metadata ("._cat.jpg")
    that copies and archives made on a Mac leave beside each file, which holds no image."""
    base = os.path.basename(name)
    return not base.startswith("._") and os.path.splitext(base)[1].lower() in IMAGE_EXTENSIONS


# Naming the format up front skips Pillow's probe of every registered format, a tenth of a small JPEG's
# decoding time (docs/measurements.md, "Decoding"). Anything else is probed as usual.
_JPEG_MAGIC = b"\xff\xd8\xff"
_MAGIC_FORMATS = ((_JPEG_MAGIC, ("JPEG",)), (b"\x89PNG\r\n\x1a\n", ("PNG",)))
# The only formats Pillow may open here (uploads are untrusted): the raster formats images are sent in. Left
# out on purpose: EPS, which Pillow hands to Ghostscript when the host has it, and the scientific, video and
# legacy formats (FITS, HDF5, GRIB, MPEG, WMF, PSD, ...) that no photo comes in and each add a parser. Nor ICO:
# Pillow decodes an icon's image while opening it, before its size can be checked against the pixel limit.
DECODABLE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "DIB", "TIFF", "PPM", "TGA", "QOI", "AVIF", "JPEG2000")
# The brands an ISO base media file (HEIF's container) lists in its first box, "ftyp", and the format each names:
# Pillow has no reader for HEIC, a phone's default, and reads AVIF only with its plugin.
_FTYP_BRANDS = {
    **dict.fromkeys((b"avif", b"avis"), "AVIF"),
    **dict.fromkeys((b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs"), "HEIC"),
    **dict.fromkeys((b"mif1", b"msf1"), "HEIF"),
}


@functools.cache
def _decodable() -> tuple[str, ...]:
    """DECODABLE_FORMATS that this Pillow has a reader for (an unknown name would fail every open)."""
    Image.init()
    return tuple(name for name in DECODABLE_FORMATS if name in Image.OPEN)


def container_format(data: bytes) -> str | None:
    """What an ISO base media file says it holds, in its major or a compatible brand: "AVIF", "HEIC" or "HEIF",
    the most specific of those it names; None for anything else."""
    if data[4:8] != b"ftyp":
        return None
    box = min(int.from_bytes(data[:4], "big"), len(data), 1024)
    brands = {data[8:12]} | {data[i : i + 4] for i in range(16, box - 3, 4)}
    named = {_FTYP_BRANDS[brand] for brand in brands if brand in _FTYP_BRANDS}
    return next((name for name in ("AVIF", "HEIC", "HEIF") if name in named), None)


def _refuse_unreadable_container(data: bytes) -> None:
    """Name a HEIC or HEIF photo (or an AVIF one, where this Pillow has no AVIF plugin) in its refusal: Pillow
    only says it cannot identify the file."""
    name = container_format(data)
    if name is not None and name not in _decodable():
        raise ImageDecodeError(
            f"{name} images are not readable here (save the photo as JPEG or PNG); "
            f"readable formats: {', '.join(_decodable())}"
        )


def _format_hint(data: bytes) -> tuple[str, ...] | None:
    for magic, formats in _MAGIC_FORMATS:
        if data.startswith(magic):
            return formats
    return None


def _check_scans(data: bytes) -> None:
    """Refuse a JPEG of more than ``MAX_JPEG_SCANS`` scans before libjpeg decodes any. Counted as the start-of-scan
    markers in the whole file: entropy-coded data never holds one (a 0xFF there is followed by 0x00), so the count
    is exact but for the bytes of metadata (EXIF, ICC), which only ever add to it."""
    scans = data.count(_START_OF_SCAN_MARKER)
    if scans > MAX_JPEG_SCANS:
        raise ImageTooLarge(f"JPEG of {scans} scans, over the limit of {MAX_JPEG_SCANS}")


# Segments a plain JPEG may have before its frame header: JFIF (APP0), quantisation and Huffman tables,
# restart interval, comments. Anything else (EXIF orientation in APP1, ICC or multi-picture APP2, Adobe
# APP14, ...) is left to Pillow's JPEG plugin.
_PLAIN_SEGMENTS = frozenset({0xE0, 0xDB, 0xC4, 0xDD, 0xFE})
_HUFFMAN_FRAMES = frozenset({0xC0, 0xC1, 0xC2})  # baseline, extended sequential, progressive
_LAYER_MODES = {1: "L", 3: "RGB"}
_START_OF_SCAN = 0xDA


def plain_jpeg_frame(data: bytes) -> tuple[str, tuple[int, int]] | None:
    """(mode, (width, height)) of an 8-bit grey or colour JPEG with nothing before its first scan but its frame
    header and the segments above, read from the headers alone; None for anything else, decoded the general
    way."""
    if not data.startswith(_JPEG_MAGIC):
        return None
    found = None
    i, end = 2, len(data)
    while i + 4 <= end and data[i] == 0xFF:
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == _START_OF_SCAN:
            return found
        length = (data[i + 2] << 8) | data[i + 3]
        if marker in _HUFFMAN_FRAMES and found is None:
            frame = data[i + 4 : i + 2 + length]
            if length < 8 or len(frame) < 6 or frame[0] != 8:
                return None
            height, width, mode = (frame[1] << 8) | frame[2], (frame[3] << 8) | frame[4], _LAYER_MODES.get(frame[5])
            if not (mode and width and height):
                return None
            # The segments between the frame header and the scan count too: Pillow reads an EXIF block there.
            found = mode, (width, height)
        elif marker not in _PLAIN_SEGMENTS or length < 2:
            return None
        i += 2 + length
    return None
