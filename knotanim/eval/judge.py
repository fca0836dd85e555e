"""A face judge we did not train: dlib's HOG face detector, 68-point landmarks and 128-d face
descriptor (the models inside the `face-recognition-models` package), run offline on the CPU.

    judge = FaceJudge()                      # loads the three dlib models on first use
    photo = judge.photo_face(photo_rgb)      # InputError when the photo holds no face
    scores = judge.score_frames(frames, photo)   # frames: uint8 [T, H, W, 3] RGB, or an iterator of them

Per frame (FrameScores, arrays of length T):
- found: the detector found a face where the photo's face is (a region 3x the photo's face box
  when the frame has the photo's shape; otherwise, e.g. a 256 x 256 crop, 3x the last face found,
  else the whole frame at two scales); a detection that overlaps the photo's box (or the first
  box found) by IoU > ANCHOR_IOU is taken to be that box, so a still head is measured in a still box;
- identity: Euclidean distance between the photo's descriptor and the frame's (dlib calls < 0.6 the
  same person; the photo against itself is 0); NaN where no face was found;
- sharpness: variance of the Laplacian of the face box resized to 160 x 160 (grey, 0..255), divided
  by the same on the photo resized so that its face is as wide as the frame's (1.0 = as sharp as
  the photo at the frame's scale); where no face is found, the last face box (or the photo's) is used;
- lip_opening: mean inner-lip gap (landmark pairs 61-67, 62-66, 63-65) over face height (landmark
  27, top of the nose, to 8, chin), a unitless fraction;
- jitter: RMS frame-to-frame motion of the rigid landmarks (brows, nose, eye corners), as a
  fraction of face height; NaN for the first frame and after a frame without a face.
Stream summaries (mouth against the audio envelope, windows) are in
`knotanim.eval.real_photos.summarise`.

The 68-point model's training data (iBUG 300-W) is for research use only, so dlib and its models
are the optional `[eval]` extra, never a runtime dependency; `judge_available()` says whether they
are installed.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from knotanim.errors import InputError

FACE_PX = 160  # side the face box is resized to before the Laplacian
SEARCH_FACE_PX = 110  # the search region is resized so the expected face is this wide (HOG finds >= 80 px)
RIGID_POINTS = tuple(range(17, 36)) + (36, 39, 42, 45)  # brows, nose, outer and inner eye corners
INNER_LIP_PAIRS = ((61, 67), (62, 66), (63, 65))
ANCHOR_IOU = 0.6  # a detection overlapping the anchor box this much is the same, still, face
EVAL_EXTRA = 'pip install "knotanim[eval]" (dlib-bin and face-recognition-models)'


def models_folder() -> Path | None:
    """The folder of .dat files inside the installed face_recognition_models package, or None.

    Found without importing the package: its __init__ needs pkg_resources, which recent setuptools
    no longer ships."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "models"
    return folder if (folder / "shape_predictor_68_face_landmarks.dat").exists() else None


def judge_available() -> tuple[bool, str]:
    """(True, "") when dlib and the face models are installed, else (False, what to install)."""
    if importlib.util.find_spec("dlib") is None:
        return False, f"dlib is not installed: {EVAL_EXTRA}"
    if models_folder() is None:
        return False, f"the face_recognition_models package is not installed: {EVAL_EXTRA}"
    return True, ""


@dataclass(frozen=True)
class FaceMeasure:
    """One face in one image: box (x0, y0, x1, y1) image pixels; landmarks float64 [68, 2] image pixels;
    descriptor float64 [128] (None when not computed); face_height (pixels, landmark 27 to 8)."""

    box: tuple[float, float, float, float]
    landmarks: np.ndarray
    descriptor: np.ndarray | None

    @property
    def face_height(self) -> float:
        return float(max(np.linalg.norm(self.landmarks[8] - self.landmarks[27]), 1e-6))

    @property
    def lip_opening(self) -> float:
        gap = np.mean([np.linalg.norm(self.landmarks[a] - self.landmarks[b]) for a, b in INNER_LIP_PAIRS])
        return float(gap / self.face_height)


@dataclass(frozen=True)
class PhotoFace:
    """The judged photo: image uint8 [H, W, 3] RGB, its largest face, its face-box sharpness at 1x,
    and the search region (x0, y0, x1, y1 pixels) and expected face width (pixels) it was measured
    with: frames of the photo's shape are measured with the same ones, so a copy scores exactly 0 and 1."""

    image: np.ndarray
    face: FaceMeasure
    sharpness: float
    region: tuple[float, float, float, float]
    expected_face: float


@dataclass
class FrameScores:
    """Per-frame measurements, arrays of length T (see the module docstring for each)."""

    found: np.ndarray
    identity: np.ndarray
    sharpness: np.ndarray
    lip_opening: np.ndarray
    jitter: np.ndarray

    @classmethod
    def empty(cls, n: int) -> "FrameScores":
        nan = np.full(n, np.nan)
        return cls(np.zeros(n, bool), nan.copy(), nan.copy(), nan.copy(), nan.copy())

    def __len__(self) -> int:
        return len(self.found)


def box_iou(a, b) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def laplacian_sharpness(image: np.ndarray, box) -> float:
    """Variance of the Laplacian of `box` (x0, y0, x1, y1 pixels, clipped to the image) of uint8
    [H, W, 3] RGB `image`, resized to FACE_PX x FACE_PX grey; 0.0 for an empty box."""
    h, w = image.shape[:2]
    x0, y0 = max(int(round(box[0])), 0), max(int(round(box[1])), 0)
    x1, y1 = min(int(round(box[2])), w), min(int(round(box[3])), h)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return 0.0
    grey = cv2.cvtColor(np.ascontiguousarray(image[y0:y1, x0:x1]), cv2.COLOR_RGB2GRAY)
    interp = cv2.INTER_AREA if (x1 - x0) > FACE_PX else cv2.INTER_CUBIC
    face = cv2.resize(grey, (FACE_PX, FACE_PX), interpolation=interp).astype(np.float64)
    return float(cv2.Laplacian(face, cv2.CV_64F).var())


class FaceJudge:
    """dlib's detector, landmarks and descriptor, loaded once per judge (on first use).

    upsample: extra HOG pyramid levels (0: faces of 80 px and more in the resized search region,
    which is all it sees). Cost on this 2-core CPU, shared: ~0.3 s a frame for the descriptor (dlib-bin
    is built without BLAS), ~30 ms for detection and landmarks.
    """

    def __init__(self, upsample: int = 0) -> None:
        ok, why = judge_available()
        if not ok:
            raise InputError(f"the real-photo judge needs its face models; {why}")
        self.upsample = int(upsample)
        self._models = None

    def models(self):
        """(detector, shape predictor, descriptor network), loaded on the first call."""
        if self._models is None:
            import dlib

            folder = models_folder()
            self._models = (dlib.get_frontal_face_detector(),
                            dlib.shape_predictor(str(folder / "shape_predictor_68_face_landmarks.dat")),
                            dlib.face_recognition_model_v1(str(folder / "dlib_face_recognition_resnet_model_v1.dat")))
        return self._models

    def measure(self, image: np.ndarray, region=None, expected_face: float | None = None,
                descriptor: bool = True, anchor=None) -> FaceMeasure | None:
        """The largest face in `region` (x0, y0, x1, y1 pixels; None: the whole image) of uint8
        [H, W, 3] RGB `image`, or None. The region is resized so a face `expected_face` pixels wide
        (None: 0.45 x the region's shorter side) is SEARCH_FACE_PX wide; results are in image pixels.
        anchor: a face box (pixels) that replaces the detected one when they overlap by IoU > ANCHOR_IOU,
        so a still head is measured in a still box (the detector's box wobbles by a few pixels as
        the mouth moves, and the landmark fit, the descriptor and the sharpness box follow it)."""
        import dlib

        detector, predictor, encoder = self.models()
        h, w = image.shape[:2]
        x0, y0, x1, y1 = (0, 0, w, h) if region is None else (max(int(region[0]), 0), max(int(region[1]), 0),
                                                              min(int(region[2]), w), min(int(region[3]), h))
        if x1 - x0 < 16 or y1 - y0 < 16:
            return None
        expected = expected_face or 0.45 * min(x1 - x0, y1 - y0)
        k = SEARCH_FACE_PX / max(expected, 1.0)
        part = np.ascontiguousarray(image[y0:y1, x0:x1])
        if abs(k - 1.0) > 0.05:
            part = cv2.resize(part, (max(int(round((x1 - x0) * k)), 1), max(int(round((y1 - y0) * k)), 1)),
                              interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR)
        else:
            k = 1.0
        rects = detector(part, self.upsample)
        if len(rects) == 0:
            return None
        r = max(rects, key=lambda r: r.width() * r.height())
        box = (r.left() / k + x0, r.top() / k + y0, r.right() / k + x0, r.bottom() / k + y0)
        if anchor is not None and box_iou(box, anchor) > ANCHOR_IOU:
            box = tuple(anchor)
        # landmarks and descriptor at the image's own resolution (their cost does not grow with it)
        rect = dlib.rectangle(*(int(round(v)) for v in box))
        shape = predictor(image, rect)
        points = np.array([[p.x, p.y] for p in shape.parts()], np.float64)
        desc = np.array(encoder.compute_face_descriptor(image, shape), np.float64) if descriptor else None
        return FaceMeasure(box, points, desc)

    def photo_face(self, photo: np.ndarray, name: str = "the photo") -> PhotoFace:
        """The photo's largest face (InputError naming `name` when there is none)."""
        photo = np.ascontiguousarray(photo)
        if photo.ndim != 3 or photo.shape[2] != 3 or photo.dtype != np.uint8:
            raise InputError(f"{name}: expected an RGB uint8 image, got {photo.dtype} {photo.shape}")
        face = None
        for fraction in (0.3, 0.12):  # a face filling the picture, then a small face in a big picture
            face = face or self.measure(photo, None, expected_face=fraction * min(photo.shape[:2]))
        if face is None:
            raise InputError(f"{name}: the judge (dlib's face detector) finds no face in it, so there is nothing to compare "
                             f"the frames with")
        region, expected = self.search_region(face.box)
        face = self.measure(photo, region, expected) or face  # as every frame of its shape is measured
        return PhotoFace(photo, face, laplacian_sharpness(photo, face.box), region, expected)

    @staticmethod
    def search_region(box) -> tuple[tuple[float, float, float, float], float]:
        """(region, expected face width): 3x the face `box` (x0, y0, x1, y1 pixels) around it, and its width."""
        x0, y0, x1, y1 = box
        w, h = x1 - x0, y1 - y0
        return (x0 - w, y0 - h, x1 + w, y1 + h), w

    def photo_sharpness_at(self, photo: PhotoFace, face_width: float) -> float:
        """The photo's face-box sharpness after resizing the photo so its face is `face_width` pixels wide."""
        x0, y0, x1, y1 = photo.face.box
        s = face_width / max(x1 - x0, 1.0)
        if abs(s - 1.0) < 0.02:
            return photo.sharpness
        pad = 0.1 * (x1 - x0)  # resize a margin too, so the box edges see real neighbours
        h, w = photo.image.shape[:2]
        px0, py0, px1, py1 = int(max(x0 - pad, 0)), int(max(y0 - pad, 0)), int(min(x1 + pad, w)), int(min(y1 + pad, h))
        part = photo.image[py0:py1, px0:px1]
        size = (max(int(round((px1 - px0) * s)), 2), max(int(round((py1 - py0) * s)), 2))
        part = cv2.resize(part, size, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)
        return laplacian_sharpness(part, ((x0 - px0) * s, (y0 - py0) * s, (x1 - px0) * s, (y1 - py0) * s))

    def score_frames(self, frames, photo: PhotoFace, identity_every: int = 1) -> FrameScores:
        """Score an iterable of uint8 [H, W, 3] RGB frames (an array [T, H, W, 3], or a generator of
        frames, e.g. decoded from an mp4) against `photo`. identity_every: compute the descriptor on
        every n-th frame only (it is most of the cost); the other frames' identity is NaN."""
        if identity_every < 1:
            raise InputError("identity_every must be >= 1")
        rows: list[tuple[bool, float, float, float, float]] = []
        last_box, last_rigid, first_box = None, None, None
        for i, frame in enumerate(frames):
            frame = np.ascontiguousarray(frame)
            # a video sink drops an odd last row or column: that is still the photo's geometry
            same_geometry = all(abs(a - b) <= 1 for a, b in zip(frame.shape[:2], photo.image.shape[:2]))
            if same_geometry:
                region, expected, anchor = photo.region, photo.expected_face, photo.face.box
            else:  # another framing (e.g. a 256 x 256 crop): follow the last face found, else search the frame
                region, expected = self.search_region(last_box) if last_box is not None else (None, None)
                anchor = first_box
            face = self.measure(frame, region, expected, descriptor=i % identity_every == 0, anchor=anchor)
            for fraction in (() if face is not None or same_geometry else (0.45, 0.25)):
                face = face or self.measure(frame, None, fraction * min(frame.shape[:2]), descriptor=i % identity_every == 0)
            identity = lip = jitter = np.nan
            if face is not None:
                if face.descriptor is not None:
                    identity = float(np.linalg.norm(face.descriptor - photo.face.descriptor))
                lip = face.lip_opening
                rigid = face.landmarks[list(RIGID_POINTS)] / face.face_height
                if last_rigid is not None:
                    jitter = float(np.sqrt(((rigid - last_rigid) ** 2).sum(1).mean()))
                last_rigid, last_box = rigid, face.box
                first_box = first_box or face.box
            else:
                last_rigid = None
            box = face.box if face is not None else (last_box or (photo.face.box if same_geometry else None))
            sharp = np.nan
            if box is not None:
                ref = self.photo_sharpness_at(photo, box[2] - box[0])
                sharp = laplacian_sharpness(frame, box) / max(ref, 1e-9)
            rows.append((face is not None, identity, sharp, lip, jitter))
        if not rows:
            return FrameScores.empty(0)
        cols = list(zip(*rows))
        return FrameScores(np.array(cols[0], bool), *(np.array(c, np.float64) for c in cols[1:]))
