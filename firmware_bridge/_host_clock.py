"""How late a command reached the device, measured without synchronised clocks.

The host stamps ARM, HEARTBEAT and STIMULATE with its monotonic clock in milliseconds; the
device notes its own clock on arrival. Each arrival's ``device time - host time`` is the
unknown offset between the two clocks plus that frame's delay on the link. A link can delay a
frame but never deliver it before it was sent, so over a short recent window the least of these
differences is the offset plus the smallest delay seen (the NTP clock filter's idea), and a
command's lateness is how much longer than that least-delayed frame it took to arrive. A held
frame only raises its own difference: a delaying link cannot make a late frame look on time.

Every reading wraps at 2**32 ms (49.7 days); differences are taken modulo 2**32 and read as
signed 32-bit numbers (:func:`firmware_bridge.wire.signed_ms`), which is exact because the
window only ever compares readings a few seconds apart.
"""

from __future__ import annotations

from collections import deque

from firmware_bridge.wire import CLOCK_MODULUS, signed_ms

WINDOW_SAMPLES = 32
"""Arrivals kept: 3.2 s of heartbeats at the host's default 0.1 s period."""

WINDOW_MS = 4_000
"""Arrivals older than this are forgotten, so the crystals' drift (±100 ppm is 0.4 ms over
the window, but 360 ms over an hour) never enters the estimate, and a host that restarts with
another clock is judged on its own frames after a pause."""


class HostClockOffset:
    """The device's running estimate of (its clock − the host's clock), from recent arrivals."""

    def __init__(self) -> None:
        self._arrivals: deque[tuple[int, int]] = deque(maxlen=WINDOW_SAMPLES)

    def observe(self, host_time_ms: int, device_time_ms: int) -> None:
        """Note an ARM or HEARTBEAT sent at ``host_time_ms`` that arrived at ``device_time_ms``."""
        self._forget_before(device_time_ms)
        self._arrivals.append((device_time_ms, (device_time_ms - host_time_ms) % CLOCK_MODULUS))

    def lateness_ms(self, host_time_ms: int, device_time_ms: int) -> int | None:
        """How much longer than the least-delayed recent arrival this command took, in ms.

        That is the command's delay minus the smallest delay in the window: never more than
        its true delay (so a command that arrived within a deadline is never judged late),
        and less by that smallest delay, sub-millisecond on a healthy link. Negative when the
        command was faster than every recent arrival. None when nothing arrived within
        :data:`WINDOW_MS`, so there is nothing to judge it against.
        """
        self._forget_before(device_time_ms)
        if not self._arrivals:
            return None
        reference = self._arrivals[-1][1]
        least = min(signed_ms(difference - reference) for _, difference in self._arrivals)
        this = signed_ms((device_time_ms - host_time_ms) % CLOCK_MODULUS - reference)
        return this - least

    def _forget_before(self, device_time_ms: int) -> None:
        while self._arrivals and signed_ms(device_time_ms - self._arrivals[0][0]) > WINDOW_MS:
            self._arrivals.popleft()
