"""Face detection on a real photo, crop geometry per CropConfig, and paste-back round trips."""
import shutil

import cv2
import numpy as np
import pytest

from knotanim.config import CropConfig
from knotanim.errors import InputError
from knotanim.frontends.face import FaceBox, Paster, centre_crop, crop_face, face_crop_for_box, paste_back, warp_to_crop
from knotanim.frontends.image import load_image

needs_haar = pytest.mark.skipif(
    not hasattr(cv2, "CascadeClassifier"),
    reason="this OpenCV has no Haar cascades (OpenCV 5 removed them): install opencv-python-headless<5")


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    """grace_hopper.jpg (600x512 public-domain portrait) copied from matplotlib's sample data."""
    cbook = pytest.importorskip("matplotlib.cbook")
    path = tmp_path_factory.mktemp("photo") / "grace_hopper.jpg"
    shutil.copy(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False), path)
    return load_image(path)


def _face_region(box: FaceBox, inset: float = 0.1):
    d = box.w * inset
    return (slice(int(box.y + d), int(box.y + box.h - d)), slice(int(box.x + d), int(box.x + box.w - d)))


@needs_haar
def test_detects_the_face(photo):
    from knotanim.frontends.face import detect_faces

    faces = detect_faces(photo)
    assert len(faces) >= 1
    box = faces[0]
    cx, cy = box.center
    assert 200 < cx < 330 and 150 < cy < 290 and 150 < box.w < 320  # the face in the portrait
    assert all(a.area >= b.area for a, b in zip(faces, faces[1:]))


@needs_haar
def test_crop_geometry_follows_crop_config(photo):
    cfg = CropConfig()
    crop, fc = crop_face(photo, cfg, 256)
    assert crop.shape == (256, 256, 3) and crop.dtype == np.uint8
    cx, cy = fc.box.center
    mapped = fc.to_crop(np.array([[cx, cy]]))[0]
    assert np.allclose(mapped, [128, cfg.face_center_y * 256], atol=1e-6)
    scale = np.sqrt(abs(np.linalg.det(fc.matrix[:, :2])))
    assert scale == pytest.approx(256 / (fc.box.w * cfg.face_scale))
    assert np.allclose(fc.to_original(fc.to_crop(np.array([[10.0, 20.0]]))), [[10.0, 20.0]])


@needs_haar
def test_paste_back_round_trip(photo):
    crop, fc = crop_face(photo, CropConfig(), 256)
    out = paste_back(photo, crop, fc)
    assert out.shape == photo.shape and out.dtype == np.uint8
    region = _face_region(fc.box)
    assert np.abs(out[region].astype(int) - photo[region]).mean() < 10  # crop was downscaled ~2x
    # an upscaled crop (no detail lost) round-trips almost exactly
    crop, fc = crop_face(photo, CropConfig(face_scale=1.2), 384)
    out = paste_back(photo, crop, fc)
    assert np.abs(out[_face_region(fc.box)].astype(int) - photo[_face_region(fc.box)]).mean() < 3
    # far from the face nothing changes
    assert np.array_equal(out[-20:, :], photo[-20:, :])


@needs_haar
def test_colour_matching_removes_a_colour_cast(photo):
    crop, fc = crop_face(photo, CropConfig(), 128)
    cast = np.clip(crop.astype(int) + [40, -20, 10], 0, 255).astype(np.uint8)
    region = _face_region(fc.box)
    matched = Paster(photo, fc, reference_crop=crop)(cast)
    plain = Paster(photo, fc, reference_crop=crop, colour_match=False)(cast)
    err = lambda img: np.abs(img[region].astype(int) - photo[region]).mean()  # noqa: E731
    base = err(Paster(photo, fc, reference_crop=crop)(crop))  # resampling loss alone
    assert err(matched) - base < 0.3 * (err(plain) - base)


@needs_haar
def test_face_choice_and_errors(photo):
    with pytest.raises(InputError, match="out of range"):
        crop_face(photo, CropConfig(), 64, face_index=5)
    with pytest.raises(InputError, match="smaller than"):
        crop_face(photo, CropConfig(min_face_pixels=400), 64)
    flat = np.full((200, 240, 3), 127, np.uint8)
    with pytest.raises(InputError, match="--no-face-detect"):
        crop_face(flat, CropConfig(), 64)


def test_no_face_detect_uses_the_centre_square():
    y, x = np.mgrid[0:120, 0:200]
    image = np.stack([x, y, x * 0], axis=2).astype(np.uint8)
    crop, fc = crop_face(image, CropConfig(), 60, detect=False)
    assert crop.shape == (60, 60, 3) and fc.box is None
    assert np.allclose(fc.to_original(np.array([[0.0, 0.0], [60.0, 60.0]])), [[40, 0], [160, 120]])
    out = paste_back(image, crop, fc)
    assert out.shape == image.shape and np.abs(out[10:110, 50:150].astype(int) - image[10:110, 50:150]).mean() < 2.5
    assert np.array_equal(out[:, :38], image[:, :38])


def test_rotated_crop_round_trip():
    rng = np.random.default_rng(1)
    image = cv2.GaussianBlur(rng.integers(0, 255, (300, 260, 3), dtype=np.uint8), (0, 0), 3)
    box = FaceBox(90, 90, 80, 80)
    fc = face_crop_for_box(image.shape, box, CropConfig(face_scale=1.5), 160, angle=12.0)
    crop = warp_to_crop(image, fc)
    out = Paster(image, fc, mask="ellipse")(crop)
    assert np.abs(out[110:150, 110:150].astype(int) - image[110:150, 110:150]).mean() < 3
    assert centre_crop(image.shape, 64).size == 64
