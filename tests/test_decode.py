"""Every image format of the README's "Your own images" decodes to 3-channel uint8 RGB; broken files raise."""
import cv2
import numpy as np
import pytest
from PIL import Image

from simclr_tf.data.decode import ImageDecodeError, read_image, read_image_resized, read_label_map


def _pattern():
    """Red left half, blue right half, 16x16."""
    image = np.zeros((16, 16, 3), np.uint8)
    image[:, :8] = (220, 20, 20)
    image[:, 8:] = (20, 20, 220)
    return image


def _assert_pattern(decoded, tolerance=12):
    assert decoded.shape == (16, 16, 3) and decoded.dtype == np.uint8
    np.testing.assert_allclose(decoded[4:12, 1:6].mean((0, 1)), (220, 20, 20), atol=tolerance)
    np.testing.assert_allclose(decoded[4:12, 10:15].mean((0, 1)), (20, 20, 220), atol=tolerance)


@pytest.mark.parametrize("name, save", [
    ("rgb.png", lambda p, a: Image.fromarray(a).save(p)),
    ("rgba.png", lambda p, a: Image.fromarray(np.dstack([a, np.full(a.shape[:2], 255, np.uint8)])).save(p)),
    ("palette.png", lambda p, a: Image.fromarray(a).quantize(4).save(p)),
    ("q.jpg", lambda p, a: Image.fromarray(a).save(p, quality=95)),
    ("cmyk.jpg", lambda p, a: Image.fromarray(a).convert("CMYK").save(p, quality=95)),
    ("b.bmp", lambda p, a: Image.fromarray(a).save(p)),
    ("w.webp", lambda p, a: Image.fromarray(a).save(p, lossless=True)),
    ("t.tiff", lambda p, a: Image.fromarray(a).save(p)),
    ("t16.tiff", lambda p, a: cv2.imwrite(p, (a[..., ::-1].astype(np.uint16) * 257))),
    ("rgb16.png", lambda p, a: cv2.imwrite(p, (a[..., ::-1].astype(np.uint16) * 257))),
])
def test_colour_formats_decode_to_rgb(tmp_path, name, save):
    path = str(tmp_path / name)
    save(path, _pattern())
    _assert_pattern(read_image(path))


def test_grey_8_and_16_bit_become_three_equal_channels(tmp_path):
    grey = np.tile(np.linspace(0, 255, 16).astype(np.uint8), (16, 1))
    Image.fromarray(grey).save(tmp_path / "g8.png")
    cv2.imwrite(str(tmp_path / "g16.png"), grey.astype(np.uint16) * 257)
    for name in ("g8.png", "g16.png"):
        decoded = read_image(str(tmp_path / name))
        assert decoded.shape == (16, 16, 3)
        np.testing.assert_array_equal(decoded[..., 0], decoded[..., 2])
        np.testing.assert_allclose(decoded[..., 1].astype(int), grey.astype(int), atol=1)


def test_gif_gives_its_first_frame(tmp_path):
    first = Image.fromarray(_pattern())
    second = Image.fromarray(np.full((16, 16, 3), 128, np.uint8))
    first.save(tmp_path / "a.gif", save_all=True, append_images=[second])
    _assert_pattern(read_image(str(tmp_path / "a.gif")), tolerance=20)


@pytest.mark.parametrize("name", ["cut.jpg", "cut.png"])
@pytest.mark.parametrize("kept", [0.3, 0.6, 0.95])
def test_truncated_files_raise_instead_of_decoding_silently(tmp_path, name, kept):
    path = tmp_path / name
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * kept)])
    with pytest.raises(ImageDecodeError, match=name):
        read_image(str(path))


def test_garbage_and_empty_files_raise(tmp_path):
    (tmp_path / "text.jpg").write_text("not an image")
    (tmp_path / "empty.png").write_bytes(b"")
    for name in ("text.jpg", "empty.png"):
        with pytest.raises(ImageDecodeError):
            read_image(str(tmp_path / name))


def test_resize_to_input_size(tmp_path):
    Image.fromarray(_pattern()).save(tmp_path / "a.png")
    assert read_image_resized(str(tmp_path / "a.png"), (24, 40)).shape == (24, 40, 3)
    assert read_image_resized(str(tmp_path / "a.png"), (8, 8)).shape == (8, 8, 3)


def test_label_maps_give_indices_not_colours(tmp_path):
    indices = np.array([[0, 1, 2, 255]] * 4, np.uint8)
    palette_map = Image.fromarray(indices, mode="P")
    palette = [0, 0, 0, 200, 10, 10, 10, 200, 10] + [0, 0, 0] * 252 + [255, 255, 255]
    palette_map.putpalette(palette)
    palette_map.save(tmp_path / "p.png")
    Image.fromarray(indices).save(tmp_path / "l.png")
    np.testing.assert_array_equal(read_label_map(str(tmp_path / "p.png")), indices)
    np.testing.assert_array_equal(read_label_map(str(tmp_path / "l.png")), indices)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(ImageDecodeError, match="single-channel or palette"):
        read_label_map(str(tmp_path / "rgb.png"))
