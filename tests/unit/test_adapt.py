"""The load-adaptive reuse age (server.adapt): full quality while no frames are dropped, longer
reuse while they are, back down when the load goes."""

from __future__ import annotations

import pytest

from server.adapt import AdaptiveReuse


def feed(r: AdaptiveReuse, t0: float, seconds: int, fps: int, dropped_share: float) -> float:
    """``seconds`` of frames at ``fps``, ``dropped_share`` of them replacing an unprocessed one;
    returns the time after the last frame."""
    n = seconds * fps
    every = round(1 / dropped_share) if dropped_share else 0
    for k in range(n):
        r.frame(t0 + k / fps, dropped=bool(every) and k % every == 0)
    return t0 + n / fps


def test_no_drops_keeps_every_frame_classified():
    r = AdaptiveReuse(0.0, 0.1)
    feed(r, 0.0, 10, 120, 0.0)
    assert r.value(10.0) == 0.0


def test_drops_lengthen_the_age_step_by_step_up_to_the_cap_then_it_returns():
    r = AdaptiveReuse(0.0, 0.1, window_s=1.0, steps=4)
    t = feed(r, 0.0, 1, 100, 0.5)  # one window (closed at t = 1 s), half the frames dropped
    assert r.value(t) == pytest.approx(0.025)
    t = feed(r, t, 10, 100, 0.5)
    assert r.value(t) == pytest.approx(0.1)  # capped
    t = feed(r, t, 2, 100, 0.05)  # between low and high: holds
    assert r.value(t) == pytest.approx(0.1)
    t = feed(r, t, 10, 100, 0.0)
    assert r.value(t) == 0.0  # back to the floor, not below


def test_an_idle_server_returns_to_the_floor_without_frames():
    r = AdaptiveReuse(0.05, 0.2, steps=3)
    feed(r, 0.0, 5, 100, 0.5)
    assert r.value(5.0) > 0.05
    for k in range(6, 12):
        r.value(float(k))  # sessions asking, no frames arriving
    assert r.value(12.0) == 0.05


def test_after_an_idle_spell_the_first_frame_finds_the_floor():
    """No session asked for 10 s after an overload: the age does not linger for the next
    client (each quiet window counts as a step down)."""
    r = AdaptiveReuse(0.0, 0.3, steps=3)
    t = feed(r, 0.0, 5, 100, 0.5)
    assert r.value(t) == pytest.approx(0.3)
    r.frame(t + 10.0, dropped=False)
    assert r.value(t + 10.0) == 0.0


def test_a_few_dropped_frames_in_a_quiet_window_do_not_count():
    r = AdaptiveReuse(0.0, 0.1, min_frames=10)
    for t in (0.0, 0.5, 1.5, 2.5, 3.5):  # 1 frame a window, each replacing one
        r.frame(t, dropped=True)
    assert r.value(4.0) == 0.0


def test_cap_at_or_below_the_floor_is_fixed():
    r = AdaptiveReuse(0.1, 0.0)
    assert not r.adaptive
    feed(r, 0.0, 5, 100, 0.9)
    assert r.value(5.0) == 0.1


@pytest.mark.parametrize("kw", [dict(floor_s=-1), dict(window_s=0), dict(low=0.2, high=0.1),
                                dict(steps=0)])
def test_bad_settings_are_refused(kw):
    with pytest.raises(ValueError):
        AdaptiveReuse(**kw)


def test_shedding_comes_after_the_cap_and_ends_only_when_the_load_falls():
    r = AdaptiveReuse(0.0, 0.1, window_s=1.0, steps=2, shed=True)
    t = feed(r, 0.0, 2, 200, 0.5)  # two overloaded windows: the age reaches its cap
    assert r.value(t) == pytest.approx(0.1) and not r.shedding
    t = feed(r, t, 1, 200, 0.5)  # still dropping at the cap: shed detection
    r.value(t + 0.001)
    assert r.shedding
    t = feed(r, t + 0.001, 5, 200, 0.0)  # same load, nothing dropped now: keep shedding
    assert r.shedding and r.value(t) == pytest.approx(0.1)
    t = feed(r, t, 2, 160, 0.0)  # 80% of the load: still above three quarters
    assert r.shedding
    t = feed(r, t, 2, 140, 0.0)  # 70%: clients left; shedding ends first ...
    assert not r.shedding
    t = feed(r, t, 10, 140, 0.0)  # ... then the age comes down
    assert r.value(t) == 0.0
    quiet = AdaptiveReuse(0.0, 0.1, window_s=1.0, steps=2)  # without shed: never
    feed(quiet, 0.0, 10, 200, 0.5)
    assert not quiet.shedding


def test_an_idle_spell_ends_shedding():
    r = AdaptiveReuse(0.0, 0.1, window_s=1.0, steps=1, shed=True)
    t = feed(r, 0.0, 3, 200, 0.5)
    r.value(t + 0.001)
    assert r.shedding
    r.value(t + 30.0)  # nobody sent anything for 30 s: the rate in that window is ~0
    assert not r.shedding


def test_an_inference_outage_is_not_load():
    """Frames that fail because the Ray tier does not answer pile up (each waits on the call's
    timeout) and look like overload; the controller holds instead of lengthening the age and
    shedding detection for good (the shed stayed after the tier came back)."""
    def run(outage: bool) -> AdaptiveReuse:
        r = AdaptiveReuse(0.0, 0.1, window_s=1.0, steps=1, shed=True)
        t = 0.0
        for _ in range(5):  # 5 windows, every frame dropped; each window had a failure
            t = feed(r, t, 1, 50, 1.0)
            if outage:
                r.failed()
        r.value(t + 0.001)
        return r

    down = run(outage=True)
    assert down.value(5.1) == 0.0 and not down.shedding
    busy = run(outage=False)  # the same drops without failures: overload
    assert busy.value(5.1) == pytest.approx(0.1) and busy.shedding
