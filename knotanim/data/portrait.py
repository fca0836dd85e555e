"""Procedural portrait identities and their static layers (rendered once per clip).

Geometry is in units of the face box side F = size / face_scale, relative to the face box centre
(size/2, face_center_y * size): the framing convention shared with the face cropper (CropConfig).
Eyes, brows and mouth are NOT drawn here; features.py draws them per frame on top of the head layer.

Shading: the face mask's distance transform gives a dome-shaped height map, to which nose,
cheek, brow-ridge and chin bumps are added; a light direction turns its gradients into diffuse
shading, softened by blur. `realism` in 0..1 moves between flat stylised and soft photographic.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from knotanim.data.randomize import fractal_noise, random_color

SKIN_TONES = np.array([[255, 224, 196], [241, 194, 160], [224, 172, 135], [198, 140, 100], [160, 105, 70],
                       [120, 78, 52], [86, 56, 40], [60, 40, 30]], np.float32)
HAIR_COLORS = np.array([[20, 16, 14], [45, 30, 22], [85, 55, 35], [130, 90, 55], [190, 150, 95], [225, 200, 140],
                        [150, 60, 30], [170, 170, 170], [235, 235, 230], [60, 40, 120], [40, 110, 160], [200, 60, 120]], np.float32)
HAIR_STYLES = ("bald", "buzz", "short", "side", "bob", "long", "bun", "curly")


@dataclass
class FaceSpec:
    """One synthetic identity. Lengths in units of F, colours RGB 0..255."""

    size: int
    face_px: float  # F in pixels
    centre: tuple[float, float]  # face box centre, pixels
    face_hw: float
    jaw_hw: float
    chin_y: float
    top_y: float
    skull_hw: float
    eye_y: float
    eye_dx: float
    eye_w: float
    eye_h: float
    iris_r: float
    brow_gap: float
    brow_thick: float
    brow_arch: float
    nose_y: float
    nose_w: float
    mouth_y: float
    mouth_hw: float
    lip_u: float
    lip_l: float
    smile: float
    skin: np.ndarray
    hair: np.ndarray
    hair_style: str
    iris: np.ndarray
    lip: np.ndarray
    sclera: np.ndarray
    brow: np.ndarray
    clothing: np.ndarray
    neckline: str
    glasses: str  # "", "round", "rect", "sun"
    glasses_color: np.ndarray
    hat: bool
    hat_color: np.ndarray
    earrings: bool
    light_dir: float  # radians in the image plane
    light: float  # diffuse strength
    realism: float  # 0 stylised .. 1 photographic
    outline: bool
    extras: dict = field(default_factory=dict)

    def px(self, u: float, v: float) -> tuple[float, float]:
        """Face units (u right, v down) -> pixel coordinates."""
        return self.centre[0] + u * self.face_px, self.centre[1] + v * self.face_px


def sample_face(rng: np.random.Generator, size: int, face_scale: float = 2.2, face_center_y: float = 0.48) -> FaceSpec:
    """Draw a random identity."""
    u = rng.uniform
    t = u(0, len(SKIN_TONES) - 1)
    skin = SKIN_TONES[int(t)] * (1 - t % 1) + SKIN_TONES[min(int(t) + 1, len(SKIN_TONES) - 1)] * (t % 1)
    skin = skin * np.exp(rng.normal(0, [0.05, 0.04, 0.06])).astype(np.float32)
    if rng.random() < 0.06:  # stylised / fantasy skin
        skin = random_color(rng, (0.2, 0.6), (0.5, 0.95))
    hair = HAIR_COLORS[int(rng.integers(len(HAIR_COLORS) - 3 if rng.random() < 0.9 else len(HAIR_COLORS)))]
    hair = np.clip(hair * np.exp(rng.normal(0, 0.1, 3)), 0, 255).astype(np.float32)
    iris = np.array([[60, 35, 20], [100, 65, 35], [70, 110, 60], [80, 120, 170], [120, 140, 150], [40, 30, 25]], np.float32)[int(rng.integers(6))]
    lip = np.clip(skin * np.array([0.85, 0.55, 0.55]) + rng.normal(0, 12, 3), 20, 255).astype(np.float32)
    if rng.random() < 0.2:  # lipstick
        lip = np.array(random_color(rng, (0.5, 0.9), (0.35, 0.8)), np.float32)
    realism = float(u(0.5, 1.0) if rng.random() < 0.7 else u(0.0, 0.5))
    # Haar's box on these drawn faces is ~16% larger than the unit F used for the geometry
    # (measured on 17 faces with opencv 4.12): shrink F so the detected box matches the convention.
    f = size / face_scale * 0.86
    glasses = str(rng.choice(["", "", "", "", "round", "rect", "sun"]))
    return FaceSpec(
        size=size, face_px=f, centre=(size / 2, face_center_y * size),
        face_hw=u(0.50, 0.60), jaw_hw=u(0.32, 0.46), chin_y=u(0.58, 0.68), top_y=u(-0.95, -0.82), skull_hw=u(0.55, 0.64),
        eye_y=u(-0.16, -0.10), eye_dx=u(0.20, 0.25), eye_w=u(0.085, 0.11), eye_h=u(0.035, 0.055), iris_r=u(0.75, 0.95),
        brow_gap=u(0.09, 0.14), brow_thick=u(0.018, 0.04), brow_arch=u(0.0, 0.04),
        nose_y=u(0.10, 0.17), nose_w=u(0.07, 0.11), mouth_y=u(0.30, 0.37), mouth_hw=u(0.15, 0.21),
        lip_u=u(0.022, 0.042), lip_l=u(0.03, 0.055), smile=u(-0.01, 0.025),
        skin=skin.astype(np.float32), hair=hair, hair_style=str(rng.choice(HAIR_STYLES)), iris=iris,
        lip=lip, sclera=np.array([240, 236, 228], np.float32) * u(0.85, 1.0),
        brow=np.clip(hair * 0.6 + skin * 0.15 * u(0, 1), 0, 255).astype(np.float32),
        clothing=random_color(rng, (0.0, 0.8), (0.1, 0.9)), neckline=str(rng.choice(["crew", "v", "collar"])),
        glasses=glasses, glasses_color=random_color(rng, (0, 0.5), (0.05, 0.6)), hat=bool(rng.random() < 0.12),
        hat_color=random_color(rng), earrings=bool(rng.random() < 0.2), light_dir=float(u(0, 2 * np.pi)),
        light=float(u(0.1, 0.5)), realism=realism, outline=bool(realism < 0.35 and rng.random() < 0.7),
        extras={"texture_seed": int(rng.integers(1 << 31))},
    )


def _outline(spec: FaceSpec, n: int = 64) -> np.ndarray:
    """Face outline polygon, float32 [2n, 2] pixels (forehead top to chin and back)."""
    v = np.linspace(spec.top_y + 0.12, spec.chin_y, n)
    kv = [spec.top_y + 0.12, spec.top_y + 0.3, spec.eye_y, spec.nose_y, spec.mouth_y, spec.chin_y - 0.08, spec.chin_y]
    kw = [spec.skull_hw * 0.7, spec.skull_hw * 0.95, spec.face_hw, spec.face_hw * 0.96, spec.jaw_hw * 1.15, spec.jaw_hw * 0.7, 0.05]
    w = np.interp(v, kv, kw)
    w = np.convolve(np.pad(w, 3, mode="edge"), np.ones(7) / 7, mode="valid")
    right = np.stack([w, v], 1)
    left = np.stack([-w, v], 1)[::-1]
    top = np.stack([np.linspace(-w[0], w[0], 9), spec.top_y + 0.12 - 0.18 * np.cos(np.linspace(-1.2, 1.2, 9))], 1)
    pts = np.concatenate([top[1:-1], right, left], 0)
    return np.stack([spec.centre[0] + pts[:, 0] * spec.face_px, spec.centre[1] + pts[:, 1] * spec.face_px], 1).astype(np.float32)


def _fill(mask: np.ndarray, pts: np.ndarray) -> np.ndarray:
    cv2.fillPoly(mask, [np.round(pts * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=4)
    return mask


def _ellipse(mask: np.ndarray, c, axes, angle: float = 0.0, value: int = 255) -> np.ndarray:
    cv2.ellipse(mask, (int(round(c[0] * 16)), int(round(c[1] * 16))), (int(round(axes[0] * 16)), int(round(axes[1] * 16))),
                angle, 0, 360, value, -1, cv2.LINE_AA, shift=4)
    return mask


def _over(rgb: np.ndarray, alpha: np.ndarray, color, mask: np.ndarray) -> None:
    """In place: paint `color` (RGB or [H,W,3]) over rgb/alpha where mask (uint8 or float 0..1)."""
    m = mask.astype(np.float32) / 255 if mask.dtype == np.uint8 else mask
    m = m[..., None]
    rgb *= 1 - m
    rgb += m * color
    alpha[:] = np.maximum(alpha, m[..., 0])


def _gauss(size: int, c, sig) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    return np.exp(-(((xx - c[0]) / sig[0]) ** 2 + ((yy - c[1]) / sig[1]) ** 2) / 2)


def _hair_texture(rng: np.random.Generator, size: int, color: np.ndarray, curly: bool) -> np.ndarray:
    n = fractal_noise(rng, size, 3, 3.0 if curly else 4.0)
    if not curly:
        k = np.zeros((15, 15), np.float32)
        k[:, 7] = 1 / 15  # vertical strands
        n = cv2.filter2D(n[..., 0], -1, k)[..., None]
        n = n / (n.std() + 1e-6)
    shade = 1 + 0.12 * n
    return np.clip(color * shade, 0, 255).astype(np.float32)


def render_static(spec: FaceSpec, rng: np.random.Generator, plate: np.ndarray) -> dict[str, np.ndarray]:
    """Render the static layers of one identity.

    plate: float32 [S, S, 3] background; the neck and shoulders are painted on it (they do not move).
    Returns: plate float32 [S,S,3]; head float32 [S,S,3] and head_alpha float32 [S,S] (moves with
    the pose, without eyes/brows/mouth); overlay float32 [S,S,3] + overlay_alpha [S,S] (glasses,
    fringe: drawn after the features); skin_mask float32 [S,S].
    """
    s, f = spec.size, spec.face_px
    cx, cy = spec.centre
    tex_rng = np.random.default_rng(spec.extras["texture_seed"])
    plate = plate.copy()
    shade_amt = 0.25 + 0.6 * spec.realism
    # --- neck and shoulders (on the plate) ---
    neck = np.zeros((s, s), np.uint8)
    nx = spec.jaw_hw * 0.75 * f
    neck_pts = np.array([[cx - nx, cy + (spec.chin_y - 0.25) * f], [cx + nx, cy + (spec.chin_y - 0.25) * f],
                         [cx + nx * 1.1, s + 2], [cx - nx * 1.1, s + 2]], np.float32)
    _fill(neck, neck_pts)
    neck_col = spec.skin * (0.82 - 0.25 * _gauss(s, (cx, cy + spec.chin_y * f), (f, 0.12 * f))[..., None])
    dummy = np.zeros((s, s), np.float32)
    _over(plate, dummy, neck_col, neck)
    body = np.zeros((s, s), np.uint8)
    sh_y = cy + (spec.chin_y + 0.35) * f
    _ellipse(body, (cx, sh_y + 0.9 * f), (1.35 * f * rng.uniform(0.9, 1.15), 1.0 * f))
    if spec.neckline == "v":
        cut = np.zeros((s, s), np.uint8)
        _fill(cut, np.array([[cx - 0.3 * f, sh_y - 0.2 * f], [cx + 0.3 * f, sh_y - 0.2 * f], [cx, sh_y + 0.35 * f]], np.float32))
        body = cv2.subtract(body, cut)
    else:
        cut = _ellipse(np.zeros((s, s), np.uint8), (cx, sh_y - 0.1 * f), (nx * 1.15, 0.18 * f))
        body = cv2.subtract(body, cut)
    cloth = spec.clothing * (1 + 0.12 * fractal_noise(tex_rng, s, 3, 24.0)) * (1.05 - 0.3 * _gauss(s, (cx, sh_y), (0.6 * f, 0.25 * f))[..., None])
    _over(plate, dummy, cloth, cv2.GaussianBlur(body, (0, 0), 0.6))
    if spec.neckline == "collar":
        col = np.zeros((s, s), np.uint8)
        for side in (-1, 1):
            _fill(col, np.array([[cx + side * nx * 1.1, sh_y - 0.15 * f], [cx + side * 0.05 * f, sh_y + 0.2 * f],
                                 [cx + side * 0.5 * f, sh_y + 0.1 * f]], np.float32))
        _over(plate, dummy, np.clip(spec.clothing * 0.6 + 100, 0, 255), col)
    # --- head layer ---
    head = np.zeros((s, s, 3), np.float32)
    alpha = np.zeros((s, s), np.float32)
    hair_tex = _hair_texture(tex_rng, s, spec.hair, spec.hair_style == "curly")
    if spec.hair_style in ("long", "bob", "curly"):
        back = np.zeros((s, s), np.uint8)
        down = {"long": 1.05, "bob": 0.55, "curly": 0.7}[spec.hair_style]
        _ellipse(back, spec.px(0, (spec.top_y + down) / 2 + 0.05), (spec.skull_hw * 1.2 * f, (down - spec.top_y) / 2 * f + 0.1 * f))
        # long hair falls behind the neck at the sides: clear the centre below the mouth
        _ellipse(back, spec.px(0, spec.chin_y + 0.55), (spec.jaw_hw * 1.25 * f, (0.55 + spec.chin_y - spec.mouth_y) * f), value=0)
        _over(head, alpha, hair_tex * 0.8, cv2.GaussianBlur(back, (0, 0), 1.0))
    ears = np.zeros((s, s), np.uint8)
    for side in (-1, 1):
        _ellipse(ears, spec.px(side * (spec.face_hw + 0.02), (spec.eye_y + spec.nose_y) / 2 + 0.02), (0.08 * f, 0.17 * f))
    _over(head, alpha, spec.skin * 0.9, ears)
    if spec.earrings:
        er = np.zeros((s, s), np.uint8)
        for side in (-1, 1):
            c = spec.px(side * (spec.face_hw + 0.03), spec.nose_y + 0.15)
            cv2.circle(er, (int(c[0] * 16), int(c[1] * 16)), int(0.035 * f * 16), 255, -1, cv2.LINE_AA, 4)
        _over(head, alpha, np.array([230, 200, 90], np.float32) * rng.uniform(0.6, 1.1), er)
    face = _fill(np.zeros((s, s), np.uint8), _outline(spec))
    face_f = face.astype(np.float32) / 255
    # height map: dome + features, then Lambertian shading from its gradient
    dist = cv2.distanceTransform((face > 127).astype(np.uint8), cv2.DIST_L2, 5) / f
    hmap = np.sqrt(np.clip(dist, 0, 0.5) * 2)
    hmap += 0.12 * _gauss(s, spec.px(0, spec.nose_y - 0.05), (spec.nose_w * f * 0.6, 0.14 * f))
    hmap += 0.08 * _gauss(s, spec.px(0, spec.nose_y), (spec.nose_w * f, 0.05 * f))
    for side in (-1, 1):
        hmap += 0.06 * _gauss(s, spec.px(side * 0.25, spec.nose_y + 0.02), (0.12 * f, 0.1 * f))
        hmap -= 0.07 * _gauss(s, spec.px(side * spec.eye_dx, spec.eye_y), (spec.eye_w * 1.3 * f, spec.eye_h * 2.2 * f))
    hmap += 0.05 * _gauss(s, spec.px(0, spec.chin_y - 0.08), (0.12 * f, 0.06 * f))
    hmap = cv2.GaussianBlur(hmap.astype(np.float32), (0, 0), 0.04 * f)
    gx = cv2.Sobel(hmap, cv2.CV_32F, 1, 0, ksize=3) * f / 8
    gy = cv2.Sobel(hmap, cv2.CV_32F, 0, 1, ksize=3) * f / 8
    lx, ly = np.cos(spec.light_dir) * spec.light, np.sin(spec.light_dir) * spec.light
    diffuse = (1 - gx * lx - gy * ly) / np.sqrt(1 + gx ** 2 + gy ** 2)
    shade = 1 + shade_amt * (np.clip(diffuse, 0.2, 1.5) - 1) - shade_amt * 0.35 * (1 - np.clip(dist * 4, 0, 1))
    skin = spec.skin * shade[..., None]
    skin = skin * (1 + 0.025 * spec.realism * fractal_noise(tex_rng, s, 3, 6.0))
    for side in (-1, 1):  # cheek blush, eye-socket shadow
        skin = skin * (1 - 0.08 * _gauss(s, spec.px(side * 0.27, spec.nose_y + 0.05), (0.1 * f, 0.07 * f))[..., None] * np.array([0, 0.5, 0.45]))
        skin = skin * (1 - 0.12 * shade_amt * _gauss(s, spec.px(side * spec.eye_dx, spec.eye_y - 0.02),
                                                     (spec.eye_w * 1.4 * f, spec.eye_h * 2.5 * f))[..., None])
    # nostrils and a soft under-nose shadow
    for side in (-1, 1):
        skin = skin * (1 - 0.55 * _gauss(s, spec.px(side * spec.nose_w * 0.45, spec.nose_y + 0.01), (0.022 * f, 0.012 * f))[..., None])
    skin = skin * (1 - 0.12 * _gauss(s, spec.px(0, spec.nose_y + 0.04), (spec.nose_w * f, 0.025 * f))[..., None])
    _over(head, alpha, skin, face)
    if spec.outline:
        cv2.polylines(head, [np.round(_outline(spec) * 16).astype(np.int32)], True, (spec.skin * 0.45).tolist(), max(1, int(f / 70)), cv2.LINE_AA, 4)
    if spec.hair_style != "bald":
        _draw_hair_front(spec, head, alpha, hair_tex)
    if spec.hat:
        hat = np.zeros((s, s), np.uint8)
        _ellipse(hat, spec.px(0, spec.top_y + 0.18), (spec.skull_hw * 1.08 * f, 0.45 * f))
        hat[int(spec.px(0, spec.top_y + 0.25)[1]):] = 0
        _ellipse(hat, spec.px(0, spec.top_y + 0.25), (spec.skull_hw * 1.35 * f, 0.07 * f))
        _over(head, alpha, spec.hat_color * (1 + 0.06 * fractal_noise(tex_rng, s, 2, 16.0)), hat)
    # overlay: glasses (drawn after eyes/brows every frame)
    overlay = np.zeros((s, s, 3), np.float32)
    oalpha = np.zeros((s, s), np.float32)
    if spec.glasses:
        _draw_glasses(spec, overlay, oalpha)
    blur = 0.3 + 0.7 * spec.realism
    head = cv2.GaussianBlur(head, (0, 0), blur * 0.6)
    return {"plate": plate, "head": np.clip(head, 0, 255), "head_alpha": np.clip(alpha, 0, 1), "overlay": overlay,
            "overlay_alpha": oalpha, "skin_mask": face_f}


def _draw_hair_front(spec: FaceSpec, head: np.ndarray, alpha: np.ndarray, tex: np.ndarray) -> None:
    s, f = spec.size, spec.face_px
    cap = np.zeros((s, s), np.uint8)
    grow = {"buzz": 1.0, "short": 1.08, "side": 1.1, "bob": 1.15, "long": 1.12, "bun": 1.06, "curly": 1.25}[spec.hair_style]
    _ellipse(cap, spec.px(0, spec.top_y + 0.42), (spec.skull_hw * grow * f, (0.45 + 0.08 * grow) * f))
    line_v = spec.eye_y - spec.brow_gap - {"buzz": 0.22, "side": 0.1, "bob": 0.08, "curly": 0.14}.get(spec.hair_style, 0.17)
    cut = np.zeros((s, s), np.uint8)
    hl = spec.face_hw * 0.92
    if spec.hair_style == "side":  # side parting: slanted hairline
        pts = [(-hl, line_v + 0.12), (hl, line_v - 0.04), (hl, 2.0), (-hl, 2.0)]
    else:
        pts = [(-hl, line_v + 0.1), (-hl * 0.5, line_v + 0.01), (0, line_v), (hl * 0.5, line_v + 0.01), (hl, line_v + 0.1), (hl, 2.0), (-hl, 2.0)]
    _fill(cut, np.array([spec.px(u, v) for u, v in pts], np.float32))
    cap = cv2.subtract(cap, cut)
    if spec.hair_style == "bun":
        _ellipse(cap, spec.px(0, spec.top_y - 0.02), (0.2 * f, 0.16 * f))
    m = cv2.GaussianBlur(cap, (0, 0), 0.8 if spec.hair_style != "curly" else 1.5).astype(np.float32) / 255
    if spec.hair_style == "buzz":
        m = m * 0.8
    _over(head, alpha, tex, m)


def _draw_glasses(spec: FaceSpec, overlay: np.ndarray, oalpha: np.ndarray) -> None:
    f = spec.face_px
    th = max(1, int(round(f / 60)))
    rim = np.zeros(oalpha.shape, np.uint8)
    lens = np.zeros(oalpha.shape, np.uint8)
    for side in (-1, 1):
        c = spec.px(side * spec.eye_dx, spec.eye_y + 0.01)
        a = (spec.eye_w * 1.7 * f, spec.eye_h * 3.2 * f)
        if spec.glasses == "rect":
            p0 = (int(c[0] - a[0]), int(c[1] - a[1]))
            p1 = (int(c[0] + a[0]), int(c[1] + a[1]))
            cv2.rectangle(lens, p0, p1, 255, -1, cv2.LINE_AA)
            cv2.rectangle(rim, p0, p1, 255, th, cv2.LINE_AA)
        else:
            _ellipse(lens, c, a)
            cv2.ellipse(rim, (int(c[0] * 16), int(c[1] * 16)), (int(a[0] * 16), int(a[1] * 16)), 0, 0, 360, 255, th, cv2.LINE_AA, 4)
    l0, l1 = spec.px(-spec.eye_dx + spec.eye_w * 1.7, spec.eye_y), spec.px(spec.eye_dx - spec.eye_w * 1.7, spec.eye_y)
    cv2.line(rim, (int(l0[0]), int(l0[1])), (int(l1[0]), int(l1[1])), 255, th, cv2.LINE_AA)
    tint = 0.8 if spec.glasses == "sun" else 0.1
    _over(overlay, oalpha, np.array([30, 30, 35], np.float32) if spec.glasses == "sun" else np.array([200, 220, 230], np.float32),
          lens.astype(np.float32) / 255 * tint)
    _over(overlay, oalpha, spec.glasses_color, rim)
