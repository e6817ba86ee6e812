"""Raw image buffers <-> RGB arrays: every supported encoding, padding, endianness, errors."""

import struct
import zlib

import cv2
import numpy as np
import pytest

from ssp_perception import encodings as enc

H, W = 6, 8


def _rgb(height=H, width=W, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _padded(pixels: np.ndarray, pad: int) -> tuple[bytes, int]:
    """Return the rows of ``pixels`` (H x row bytes) followed by ``pad`` junk bytes each."""
    rows = pixels.reshape(pixels.shape[0], -1).view(np.uint8)
    junk = np.full((rows.shape[0], pad), 0xAB, np.uint8)
    return np.hstack([rows, junk]).tobytes(), rows.shape[1] + pad


def _decode(data, encoding, step, height=H, width=W, big=False):
    return enc.decode_image(data, encoding, width, height, step, big)


@pytest.mark.parametrize("pad", [0, 5])
def test_rgb8_is_a_view_of_the_input_buffer(pad):
    rgb = _rgb()
    data, step = _padded(rgb, pad)
    buffer = np.frombuffer(data, np.uint8)
    out = _decode(buffer, "rgb8", step)
    assert np.shares_memory(out, buffer), "rgb8 must not be copied"
    np.testing.assert_array_equal(out, rgb)


@pytest.mark.parametrize("pad", [0, 3])
@pytest.mark.parametrize("encoding, make", [
    ("bgr8", lambda rgb: rgb[:, :, ::-1]),
    ("rgba8", lambda rgb: np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)])),
    ("bgra8", lambda rgb: np.dstack([rgb[:, :, ::-1], np.full(rgb.shape[:2], 7, np.uint8)])),
])
def test_colour_encodings_recover_rgb(encoding, make, pad):
    rgb = _rgb()
    data, step = _padded(np.ascontiguousarray(make(rgb)), pad)
    out = _decode(data, encoding, step)
    assert out.shape == (H, W, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, rgb)


def test_mono8_becomes_grey_rgb():
    grey = _rgb()[:, :, 0]
    data, step = _padded(grey, 2)
    out = _decode(data, "mono8", step)
    np.testing.assert_array_equal(out, np.dstack([grey] * 3))


@pytest.mark.parametrize("big", [False, True])
@pytest.mark.parametrize("encoding, channels", [("mono16", 1), ("rgb16", 3), ("bgr16", 3)])
def test_16bit_encodings_keep_the_high_byte_in_either_byte_order(encoding, channels, big):
    values = np.random.default_rng(1).integers(0, 65536, (H, W, channels), dtype=np.uint16)
    stored = values.astype(">u2" if big else "<u2")
    data, step = _padded(stored, 4)
    out = _decode(data, encoding, step, big=big)
    high = (values >> 8).astype(np.uint8)
    expected = {"mono16": np.dstack([high[:, :, 0]] * 3), "rgb16": high,
                "bgr16": high[:, :, ::-1]}[encoding]
    np.testing.assert_array_equal(out, expected)


def _mosaic(rgb: np.ndarray, pattern: str) -> np.ndarray:
    """Sample an RGB image through a Bayer filter whose first 2x2 block reads ``pattern``."""
    index = {"r": 0, "g": 1, "b": 2}
    out = np.empty(rgb.shape[:2], rgb.dtype)
    for k, colour in enumerate(pattern):
        dy, dx = divmod(k, 2)
        out[dy::2, dx::2] = rgb[dy::2, dx::2, index[colour]]
    return out


@pytest.mark.parametrize("pattern", ["rggb", "bggr", "gbrg", "grbg"])
@pytest.mark.parametrize("bits", [8, 16])
def test_bayer_patterns_demosaic_to_the_right_colours(pattern, bits):
    colour = np.array([200, 100, 40], np.uint8)
    rgb = np.broadcast_to(colour, (16, 16, 3))
    raw = _mosaic(rgb, pattern)
    if bits == 16:
        raw = raw.astype("<u2") << 8
    data, step = _padded(raw, 0)
    out = _decode(data, f"bayer_{pattern}{bits}", step, 16, 16)
    # A flat colour survives demosaicing exactly away from the border.
    np.testing.assert_allclose(out[4:-4, 4:-4].reshape(-1, 3), np.tile(colour, (64, 1)), atol=1)


@pytest.mark.parametrize("encoding", ["yuv422", "uyvy", "yuv422_yuy2", "yuyv"])
def test_yuv422_variants_match_opencv_uyvy_round_trip(encoding):
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[:, :W // 2] = (220, 30, 30)                    # red left half
    rgb[:, W // 2:] = (30, 30, 220)                    # blue right half
    uyvy = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_UYVY)   # (H, W, 2) bytes U Y0 V Y1
    if encoding in ("yuv422_yuy2", "yuyv"):
        # Y0 U Y1 V: swap the two bytes of every pair.
        packed = uyvy.reshape(H, W // 2, 4)[:, :, [1, 0, 3, 2]].reshape(H, W, 2)
    else:
        packed = uyvy
    data, step = _padded(np.ascontiguousarray(packed), 6)
    out = _decode(data, encoding, step).astype(int)
    np.testing.assert_allclose(out, rgb, atol=12)
    assert out[0, 0, 0] > 150 > out[0, 0, 2] and out[0, -1, 2] > 150 > out[0, -1, 0]


def test_longer_data_than_needed_is_accepted():
    rgb = _rgb()
    out = _decode(rgb.tobytes() + b"\0" * 10, "rgb8", W * 3)
    np.testing.assert_array_equal(out, rgb)


@pytest.mark.parametrize("kwargs, reason, words", [
    ({"encoding": "8UC3"}, "unknown_encoding", ["'8UC3'", "rgb8", "bayer_rggb8"]),
    ({"encoding": "rgb8", "height": 0}, "empty_image", ["8x0"]),
    ({"encoding": "rgb8", "width": 0}, "empty_image", ["0x6"]),
    ({"encoding": "rgb8", "step": W * 3 - 1}, "bad_step", ["step 23", "24"]),
    ({"encoding": "rgb8", "data": b"\0" * (W * 3 * H - 1)}, "truncated", ["143 bytes", "144"]),
    ({"encoding": "yuv422", "width": 7, "step": 14}, "odd_width", ["width 7"]),
])
def test_invalid_fields_raise_a_clear_error(kwargs, reason, words):
    args = {"data": b"\0" * (W * 3 * H), "width": W, "height": H, "step": W * 3,
            "is_bigendian": False}
    args.update(kwargs)
    with pytest.raises(enc.EncodingError) as info:
        enc.decode_image(**args)
    assert info.value.reason == reason
    for word in words:
        assert word in str(info.value)


def test_every_supported_encoding_decodes():
    for encoding in enc.SUPPORTED_ENCODINGS:
        step = W * enc.bytes_per_pixel(encoding)
        out = _decode(bytes(range(256)) * (step * H // 256 + 1), encoding, step)
        assert out.shape == (H, W, 3) and out.dtype == np.uint8, encoding


@pytest.mark.parametrize("codec", [".png", ".jpg"])
def test_compressed_round_trip(codec):
    rgb = np.zeros((32, 48, 3), np.uint8)
    rgb[:, :24] = (250, 10, 10)
    ok, data = cv2.imencode(codec, rgb[:, :, ::-1])
    assert ok
    out = enc.decode_compressed(data.tobytes(), "rgb8; png compressed bgr8")
    assert out.shape == rgb.shape
    if codec == ".png":
        np.testing.assert_array_equal(out, rgb)
    else:
        # JPEG smears chroma across the edge; away from it the colours survive.
        for cols in (slice(0, 16), slice(32, 48)):
            np.testing.assert_allclose(out[:, cols].astype(int), rgb[:, cols], atol=8)


def test_compressed_rgb_storage_is_swapped_back():
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0] = 255
    ok, data = cv2.imencode(".png", rgb)                # an RGB buffer written as if BGR
    out = enc.decode_compressed(data.tobytes(), "rgb8; png compressed rgb8")
    assert (out[..., 0] == 255).all() and (out[..., 2] == 0).all()


@pytest.mark.parametrize("data, fmt, reason", [
    (b"\xff\xd8\xff\xe0 definitely not a jpeg", "jpeg", "corrupt_compressed"),
    (b"", "png", "corrupt_compressed"),
    (b"\x89PNG", "16UC1; compressedDepth png", "unsupported_format"),
])
def test_bad_compressed_data_raises(data, fmt, reason):
    with pytest.raises(enc.EncodingError) as info:
        enc.decode_compressed(data, fmt)
    assert info.value.reason == reason


def _png_header_only(width: int, height: int) -> bytes:
    """Return a valid PNG that declares width x height grey pixels, all zero (a few KB-MB)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

    z = zlib.compressobj(9)
    rows = b"".join(z.compress(b"\x00" * (width + 1)) for _ in range(height)) + z.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)   # 8-bit grey
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows)
            + chunk(b"IEND", b""))


@pytest.mark.parametrize("width, height, needle", [
    (20000, 20000, "more than"),          # ~390 KB that would decode to 400 M pixels
    (9000, 16, "9000x16 pixels"),
])
def test_compressed_image_larger_than_max_side_is_refused_before_decoding(width, height,
                                                                          needle):
    with pytest.raises(enc.EncodingError) as info:
        enc.decode_compressed(_png_header_only(width, height), "png")
    assert info.value.reason == "too_large"
    assert needle in str(info.value) and "sides up to 8192" in str(info.value)
    assert enc.decode_compressed(_png_header_only(64, 16), "png").shape == (16, 64, 3)


def test_output_buffers_and_visualisations():
    labels = np.array([[0, 1], [2, 255]], np.uint8)
    lut = enc.palette_lut([(10, 20, 30), (40, 50, 60), (70, 80, 90)])
    color = enc.colorize(labels, lut)
    assert color.shape == (2, 2, 3)
    np.testing.assert_array_equal(color[1, 0], (70, 80, 90))
    np.testing.assert_array_equal(color[1, 1], (0, 0, 0))
    image = np.full((2, 2, 3), 100, np.uint8)
    mixed = enc.blend(image, color, 0.5)
    np.testing.assert_allclose(mixed[0, 0].astype(int), (55, 60, 65), atol=1)

    conf = np.array([[0.0, 1.0], [0.5, np.nan]], np.float32)
    np.testing.assert_array_equal(enc.confidence_to_mono8(conf), [[0, 255], [128, 0]])

    raw = enc.to_raw(color, "rgb8")
    assert (raw.height, raw.width, raw.step, raw.data.size) == (2, 2, 6, 12)
    raw = enc.to_raw(labels, "mono8")
    assert (raw.step, raw.data.tolist()) == (2, [0, 1, 2, 255])
    with pytest.raises(ValueError, match="mono8 needs a uint8 array"):
        enc.to_raw(color, "mono8")
