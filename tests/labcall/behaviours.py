"""What a SIP device (or the carrier) does when the PBX rings it.

Each behaviour is a small frozen dataclass; the factory functions below are the
public way to make one. A behaviour turns into a SIPp scenario (see
scenarios.py); `unreachable()` means no agent at all (nothing listens on the
device's port, so Asterisk's qualify marks the contact Unavail).
"""

from __future__ import annotations

from dataclasses import dataclass

from . import scenarios

_DTMF = set("0123456789*#ABCD")


@dataclass(frozen=True)
class Behaviour:
    """kind: ring | answer | busy | press | unreachable."""

    kind: str
    after: float = 0.0          # seconds from the INVITE to the 200 OK (answer, press)
    press_after: float = 0.0    # seconds from the 200 OK to the first INFO (press)
    digits: str = ""            # DTMF digits sent as INFO (press), one INFO each
    digit_gap: float = 0.3      # seconds between two INFOs (press, several digits)

    @property
    def listens(self) -> bool:
        return self.kind != "unreachable"

    @property
    def answers(self) -> bool:
        return self.kind in ("answer", "press")

    def scenario_xml(self, name: str = "labcall-uas", occupy: bool = False) -> str:
        """SIPp scenario; occupy=True: answer the first INVITE and keep it
        (see occupy()), behave like this for every later one."""
        if not self.listens:
            raise ValueError("unreachable() has no scenario: nothing listens")
        return scenarios.uas_scenario(self.kind, after=self.after, press_after=self.press_after,
                                      digits=self.digits, digit_gap=self.digit_gap,
                                      occupy=occupy, name=name)

    def __str__(self) -> str:
        if self.kind == "answer":
            return f"answer(after={self.after:g})"
        if self.kind == "press":
            return f"answer_and_press({self.digits!r}, after={self.after:g}, press_after={self.press_after:g})"
        return f"{self.kind}()"


def _seconds(value: float, what: str) -> float:
    value = float(value)
    if value < 0:
        raise ValueError(f"{what} must be >= 0 seconds, got {value}")
    return value


def ring() -> Behaviour:
    """100 Trying + 180 Ringing, never answers (CANCEL gets 200 + 487)."""
    return Behaviour("ring")


def answer(after: float = 0.0) -> Behaviour:
    """180, then 200 OK with SDP `after` seconds after the INVITE; stays until BYE."""
    return Behaviour("answer", after=_seconds(after, "after"))


def answer_silent(after: float = 0.0) -> Behaviour:
    """Answers and never presses anything (same as answer(); reads better in tests)."""
    return answer(after)


def busy() -> Behaviour:
    """486 Busy Here at once."""
    return Behaviour("busy")


def unreachable() -> Behaviour:
    """No agent at all: nothing listens on the device's port."""
    return Behaviour("unreachable")


def answer_and_press(digit: str, after: float = 0.0, press_after: float = 1.0,
                     digit_gap: float = 0.3) -> Behaviour:
    """Answers `after` s after the INVITE, then `press_after` s after the 200 OK
    sends an in-dialog INFO (application/dtmf-relay, Signal=<digit>,
    Duration=250). Several digits ("12") send one INFO each, `digit_gap` s apart.
    Then stays until the PBX hangs up (BYE gets 200)."""
    digit = str(digit)
    if not digit or not set(digit) <= _DTMF:
        raise ValueError(f"DTMF digits must be among 0-9 * # A-D, got {digit!r}")
    return Behaviour("press", after=_seconds(after, "after"),
                     press_after=_seconds(press_after, "press_after"),
                     digits=digit, digit_gap=_seconds(digit_gap, "digit_gap"))
