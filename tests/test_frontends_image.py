"""Image loading: formats, documented conversions and every bad-input message."""
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from knotanim.errors import InputError
from knotanim.frontends.image import image_size, load_image, to_rgb8


def _png_header_only(path, width, height):
    """A PNG whose header claims width x height, with no real pixel data (a 'bomb' header)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b""))
    return path


def _gradient(h=96, w=128):
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // w, y * 255 // h, (x + y) % 256], axis=2).astype(np.uint8)


def test_rgb_jpeg_and_png(tmp_path):
    img = _gradient()
    Image.fromarray(img).save(tmp_path / "a.png")
    Image.fromarray(img).save(tmp_path / "a.jpg", quality=95)
    png = load_image(tmp_path / "a.png")
    assert png.dtype == np.uint8 and png.shape == (96, 128, 3) and np.array_equal(png, img)
    jpg = load_image(tmp_path / "a.jpg")
    assert jpg.shape == (96, 128, 3) and np.abs(jpg.astype(int) - img).mean() < 6


def test_conversions_gray_rgba_16bit_palette(tmp_path):
    gray = (np.arange(96 * 128) % 256).astype(np.uint8).reshape(96, 128)
    Image.fromarray(gray, "L").save(tmp_path / "g.png")
    g = load_image(tmp_path / "g.png")
    assert g.shape == (96, 128, 3) and np.array_equal(g[:, :, 0], gray) and np.array_equal(g[:, :, 2], gray)

    rgba = np.zeros((96, 128, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:, :64, 3] = 255  # left half opaque red-ish, right half fully transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "t.png")
    t = load_image(tmp_path / "t.png")
    assert tuple(t[0, 0]) == (200, 0, 0) and tuple(t[0, 127]) == (255, 255, 255)  # over white

    deep = (np.arange(96 * 128, dtype=np.uint32).reshape(96, 128) * 5).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "d.png")  # 16-bit grayscale PNG
    d = load_image(tmp_path / "d.png")
    assert d.dtype == np.uint8 and abs(int(d[-1, -1, 0]) - round(int(deep[-1, -1]) / 257)) <= 1

    Image.fromarray(_gradient()).convert("P").save(tmp_path / "p.gif")
    assert load_image(tmp_path / "p.gif").shape == (96, 128, 3)


def test_exif_orientation_is_honoured(tmp_path):
    img = _gradient(60, 100)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(img).save(tmp_path / "o.jpg", exif=exif, quality=95)
    out = load_image(tmp_path / "o.jpg", min_side=32)
    assert out.shape == (100, 60, 3)
    assert image_size(tmp_path / "o.jpg") == (60, 100)
    # the top-left of the displayed image is the original's bottom-left
    assert np.abs(out[2, 2].astype(int) - img[-3, 2]).max() < 20


def test_to_rgb8_float_and_bgr():
    f = np.full((4, 4, 3), 0.5, np.float32)
    assert to_rgb8(f)[0, 0, 0] == 128
    bgr = np.zeros((4, 4, 3), np.uint8)
    bgr[..., 0] = 255  # blue in BGR
    assert tuple(to_rgb8(bgr, bgr=True)[0, 0]) == (0, 0, 255)


@pytest.mark.parametrize("make, pattern", [
    (lambda p: p.write_bytes(b""), "empty"),
    (lambda p: p.write_text("this is not an image\n"), "cannot read image"),
    (lambda p: None, "does not exist"),
])
def test_unreadable_images(tmp_path, make, pattern):
    path = tmp_path / "bad.jpg"
    make(path)
    with pytest.raises(InputError, match=pattern):
        load_image(path)


def test_truncated_jpeg(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)).save(tmp_path / "full.jpg", quality=95)
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated"):
        load_image(tmp_path / "cut.jpg")


def test_too_small_image(tmp_path):
    Image.fromarray(_gradient(16, 16)).save(tmp_path / "tiny.png")
    with pytest.raises(InputError, match="too small"):
        load_image(tmp_path / "tiny.png")


def test_huge_images_refused_before_decoding(tmp_path):
    with pytest.raises(InputError, match="absurdly large"):
        load_image(_png_header_only(tmp_path / "bomb.png", 100_000, 100_000))
    with pytest.raises(InputError, match="megapixels"):  # above our 64 MP limit, below Pillow's
        load_image(_png_header_only(tmp_path / "big.png", 9000, 8000))
    with pytest.raises(InputError, match="above the limit"):
        load_image(_png_header_only(tmp_path / "lim.png", 300, 300), max_pixels=50_000)


def test_folder_is_not_an_image(tmp_path):
    with pytest.raises(InputError, match="folder"):
        load_image(tmp_path)
