"""Load-adaptive classification plan: reuse a tracked face's probabilities longer when busy.

Every live session keeps only its newest frame, so a server that cannot keep up drops frames
(``FrameSession.offer``). :class:`AdaptiveReuse` watches the share of received frames that were
dropped, across all sessions, in windows of ``window_s``: above ``high`` it lengthens the reuse
age by ``step_s`` (up to ``cap_s``), below ``low`` it shortens it (down to ``floor_s``, the
configured ``--reuse-s``), in between it holds. With few clients nothing is dropped and the
configured age holds (full quality); under overload each tracked face is classified about
every ``cap_s`` seconds and the saved classifier work goes to more frames.
New faces are always classified at once (``core.tracker.FaceTracker.start_frame``).

With ``shed`` there is one more step: when the age is at its cap and a window still drops more
than ``high``, live frames *shed* detection cost (``shedding``: the server detects with the
``fast`` selfie-range detector, about half the cost of ``live`` at 640x480, and small or
distant faces go unseen) until the frames offered fall below ``RESTORE_SHARE`` of the rate at
which shedding began (clients left), in a window that drops less than ``low``; only then does
the age come down again. Restoring on the offered load, not on drops, keeps a steady overload
from switching detectors back and forth.

Measured effects: README, "Real-video evaluation" (accuracy by reuse age) and "Speed".
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

#: The longest reuse age the server moves to under load, by default (seconds): the step after
#: the default 0.2 s in the dev-clip grid (README): the same clips right, frame accuracy 0.527
#: vs 0.520, but a median reaction of 0.78 s, over the 0.7 s the default must meet; acceptable
#: only as the overloaded mode.
DEFAULT_REUSE_MAX_S = 0.3
#: Shedding ends when the frames offered per second fall below this share of the rate at which
#: it began.
RESTORE_SHARE = 0.75


class AdaptiveReuse:
    """The reuse age (seconds) the sessions use now; see the module docstring."""

    def __init__(self, floor_s: float = 0.0, cap_s: float = DEFAULT_REUSE_MAX_S,
                 window_s: float = 1.0, high: float = 0.10, low: float = 0.02,
                 steps: int = 4, min_frames: int = 10, shed: bool = False) -> None:
        if floor_s < 0 or cap_s < 0:
            raise ValueError("reuse ages must be >= 0")
        if window_s <= 0 or not 0 <= low < high <= 1 or steps < 1:
            raise ValueError("window_s > 0, 0 <= low < high <= 1 and steps >= 1 are required")
        self.floor_s = float(floor_s)
        self.cap_s = max(float(cap_s), self.floor_s)
        self.window_s = float(window_s)
        self.high, self.low = float(high), float(low)
        self.step_s = (self.cap_s - self.floor_s) / steps
        self.min_frames = int(min_frames)
        self.level_s = self.floor_s
        #: Whether the shedding step exists, and whether live frames shed detection now.
        self.shed = bool(shed)
        self.shedding = False
        self._shed_rate = 0.0
        self._t0: float | None = None
        self._received = 0
        self._dropped = 0
        self._failed = 0

    @property
    def adaptive(self) -> bool:
        """False when the cap is the floor (``--reuse-max-s`` at or below ``--reuse-s``)."""
        return self.step_s > 0

    def frame(self, now: float, dropped: bool) -> None:
        """A session received a frame at ``now`` (monotonic seconds); ``dropped``: it replaced
        an older frame that was never processed."""
        self._received += 1
        self._dropped += bool(dropped)
        self.value(now)

    def failed(self) -> None:
        """A frame failed because the classifier did not answer (the Ray tier is down): its
        window is not evidence of load, so it neither lengthens the age nor starts shedding
        (frames wait on the tier's timeout and pile up as if the server were overloaded)."""
        self._failed += 1

    def value(self, now: float) -> float:
        """The reuse age to use at ``now``, closing the current window if it is over."""
        if not self.adaptive:
            return self.floor_s
        if self._t0 is None:
            self._t0 = now
        elif now - self._t0 >= self.window_s:
            share = self._dropped / self._received if self._received else 0.0
            rate = self._received / (now - self._t0)
            if self._failed:
                pass  # an outage, not load: hold
            elif self._received >= self.min_frames and share > self.high:
                if self.level_s < self.cap_s:
                    self.level_s = min(self.cap_s, round(self.level_s + self.step_s, 9))
                elif self.shed:
                    if not self.shedding:
                        log.info("overload: live frames use the fast detector (%.0f frames/s "
                                 "offered, %.0f%% dropped)", rate, 100 * share)
                    self._shed_rate = max(self._shed_rate, rate) if self.shedding else rate
                    self.shedding = True
            elif share < self.low and self.shedding:
                if rate < RESTORE_SHARE * self._shed_rate:
                    log.info("load down to %.0f frames/s: live frames use the configured "
                             "detector again", rate)
                    self.shedding, self._shed_rate = False, 0.0
            elif share < self.low:  # every whole window since the last close counts (idle)
                windows = int((now - self._t0) // self.window_s)
                self.level_s = max(self.floor_s,
                                   round(self.level_s - self.step_s * windows, 9))
            self._t0, self._received, self._dropped, self._failed = now, 0, 0, 0
        return self.level_s
