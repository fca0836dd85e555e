"""Virtual camera: open one through pyvirtualcam, and explain exactly what is missing when none opens.

`diagnose()` inspects the machine (pyvirtualcam importable? on Linux: the v4l2loopback module,
its exclusive_caps setting, /dev/video* loopback devices; on Windows/macOS: OBS Virtual Camera)
and returns a `Diagnosis` whose text names each problem and the command that fixes it.
"""
from __future__ import annotations

import glob
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path

from knotanim.errors import BackendUnavailable

MODPROBE = "sudo modprobe v4l2loopback devices=1 exclusive_caps=1 card_label=knotanim"
INSTALL_LINUX = "sudo apt-get install v4l2loopback-dkms   (Fedora: sudo dnf install v4l2loopback)"


@dataclass
class Diagnosis:
    ok: bool  # a device is (probably) available
    lines: list[str] = field(default_factory=list)  # findings, one per line
    fix: list[str] = field(default_factory=list)  # commands or steps to run, in order

    @property
    def text(self) -> str:
        out = list(self.lines)
        if self.fix:
            out += ["", "To fix it:"] + [f"  {c}" for c in self.fix]
        return "\n".join(out)


def _linux_loopback_devices(sys_root: str = "/sys") -> list[tuple[str, str]]:
    """(/dev/videoN, card name) of every v4l2loopback device."""
    found = []
    for name_file in sorted(glob.glob(os.path.join(sys_root, "class/video4linux/video*/name"))):
        node = Path(name_file).parent.name
        try:
            card = Path(name_file).read_text().strip()
        except OSError:
            continue
        driver = Path(name_file).parent / "device" / "driver"
        is_loop = "loopback" in card.lower() or "knotanim" in card.lower() or (
            driver.exists() and "v4l2loopback" in os.path.realpath(driver))
        if is_loop:
            found.append((f"/dev/{node}", card))
    return found


def diagnose(error: str | None = None, system: str | None = None, sys_root: str = "/sys") -> Diagnosis:
    """What stands between this machine and a working virtual camera. error: the open error, if any."""
    system = system or platform.system()
    d = Diagnosis(ok=True)
    if error:
        d.lines.append(f"Opening the virtual camera failed: {error.strip().splitlines()[0]}")
    try:
        import pyvirtualcam  # noqa: F401
    except ImportError:
        d.ok = False
        d.lines.append("pyvirtualcam is not installed (it is an optional dependency).")
        d.fix.append('pip install "knotanim[live]"   (or: pip install pyvirtualcam)')
        return d
    if system == "Linux":
        module = Path(sys_root) / "module" / "v4l2loopback"
        if not module.exists():
            d.ok = False
            d.lines.append("The v4l2loopback kernel module is not loaded, so there is no /dev/video loopback device.")
            d.fix += [f"{INSTALL_LINUX}", MODPROBE,
                      "(containers and some cloud machines cannot load kernel modules: run the app on the host)"]
            return d
        caps = module / "parameters" / "exclusive_caps"
        try:
            value = caps.read_text().strip()
        except OSError:
            value = ""
        if value and not any(v in ("Y", "1") for v in value.replace(",", " ").split()[:1]):
            d.ok = False
            d.lines.append(f"v4l2loopback is loaded with exclusive_caps={value}: Chrome, Zoom and Teams will not list it.")
            d.fix += ["sudo modprobe -r v4l2loopback", MODPROBE]
        devices = _linux_loopback_devices(sys_root)
        if not devices:
            d.ok = False
            d.lines.append("v4l2loopback is loaded but created no /dev/video device.")
            d.fix += ["sudo modprobe -r v4l2loopback", MODPROBE]
        else:
            d.lines.append("Loopback devices: " + ", ".join(f"{n} ({c})" for n, c in devices))
            busy = [n for n, _ in devices if not os.access(n, os.W_OK)]
            if busy:
                d.ok = False
                d.lines.append(f"No write permission on {', '.join(busy)}.")
                d.fix.append("sudo usermod -aG video $USER   (then log out and back in)")
    elif system in ("Windows", "Darwin"):
        d.lines.append("pyvirtualcam sends frames to OBS Virtual Camera on Windows and macOS.")
        if error:
            d.ok = False
            d.fix += ["Install OBS Studio 30 or newer (https://obsproject.com)",
                      "Start OBS once and click 'Start Virtual Camera', then 'Stop Virtual Camera' "
                      "(this installs the camera; on macOS allow the system extension)", "Close OBS and retry here"]
    else:
        d.ok = False
        d.lines.append(f"No virtual camera backend is known for {system}.")
    if error and d.ok:
        d.ok = False
        d.lines.append("A device exists but could not be opened: it may be in use by another program.")
    return d


def open_camera(width: int, height: int, fps: float, backend: str | None = None, device: str | None = None):
    """A pyvirtualcam.Camera (RGB frames of width x height); BackendUnavailable with the diagnosis if not."""
    try:
        import pyvirtualcam
    except ImportError:
        raise BackendUnavailable(diagnose().text) from None
    try:
        return pyvirtualcam.Camera(width, height, fps, fmt=pyvirtualcam.PixelFormat.RGB, backend=backend, device=device)
    except Exception as e:  # noqa: BLE001 - pyvirtualcam raises RuntimeError / KeyError per backend
        message = str(e) if not isinstance(e, KeyError) else f"unknown backend {e}"
        raise BackendUnavailable(diagnose(message).text) from None
