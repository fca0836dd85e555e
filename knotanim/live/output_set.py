"""The set of outputs a live pipeline sends its paced frames to (preview, recorder, virtual camera, ...).

Kept apart from the pipeline so that attaching, detaching and a failing output can be tested alone
(tests/test_live_outputs.py), and from the outputs themselves (knotanim/live/outputs.py).
"""
from __future__ import annotations

import threading
from typing import Any


class OutputSet:
    """The outputs a live pipeline sends its paced frames to (each has send(LiveFrame) and close()).

    An output whose send raises is detached and closed on a thread of its own (closing finalises a
    recording, which must not stall the pacer and the preview), and the others go on; `failed` lists
    (output, message) for each. Safe to change from any thread while the pacer sends."""

    def __init__(self) -> None:
        self._outputs: list[Any] = []  # replaced, never mutated: the pacer iterates a snapshot
        self._lock = threading.Lock()
        self.failed: list[tuple[Any, str]] = []
        self._closers: list[threading.Thread] = []  # threads finalising detached outputs

    def __len__(self) -> int:
        return len(self._outputs)

    def add(self, output: Any) -> None:
        with self._lock:
            self._outputs = [*self._outputs, output]

    def remove(self, output: Any, close: bool = True) -> None:
        with self._lock:
            self._outputs = [o for o in self._outputs if o is not output]
        if close:
            self._close(output)

    def send(self, frame: Any) -> None:
        """Send one frame to every output; a failing output is detached (closed on its own thread)."""
        for output in self._outputs:
            try:
                output.send(frame)
            except Exception as e:  # noqa: BLE001 - a failing output is detached, the others go on
                self._detach(output, str(e).splitlines()[0] if str(e) else type(e).__name__)

    def close_all(self) -> None:
        """Detach and close every output (finalising recordings), then wait for detached ones still closing."""
        with self._lock:
            outputs, self._outputs = self._outputs, []
        for output in outputs:
            self._close(output)
        self.wait_closed()

    def wait_closed(self, timeout: float = 60.0) -> None:
        """Wait until every output detached after a failure is closed (its recording finalised)."""
        for t in list(self._closers):
            if t is not threading.current_thread():
                t.join(timeout)

    def _close(self, output: Any) -> None:
        try:
            output.close()
        except Exception as e:  # noqa: BLE001 - e.g. the disk filled up while finalising a recording
            self._detach(output, f"closing: {str(e).splitlines()[0] if str(e) else type(e).__name__}", close=False)

    def _detach(self, output: Any, message: str, close: bool = True) -> None:
        name = getattr(output, "name", type(output).__name__)
        with self._lock:
            self._outputs = [o for o in self._outputs if o is not output]
        if close:
            closer = threading.Thread(target=self._close, args=(output,), name="knotanim-close", daemon=True)
            closer.start()  # started before it is listed, so wait_closed never joins an unstarted thread
            self._closers.append(closer)
        # reported last: whoever sees the failure can wait_closed() on its closer at once
        self.failed.append((output, f"{name} stopped: {message}"))
