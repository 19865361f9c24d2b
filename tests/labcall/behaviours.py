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
    """kind: ring | answer | busy | press | unreachable | refer | atxfer."""

    kind: str
    after: float = 0.0          # seconds from the INVITE to the 200 OK (answer, press, refer, atxfer)
    press_after: float = 0.0    # seconds from the 200 OK to the first INFO (press, atxfer) or the REFER (refer)
    digits: str = ""            # DTMF digits sent as INFO (press, atxfer), one INFO each
    digit_gap: float = 0.3      # seconds between two INFOs (press, several digits)
    target: str = ""            # extension transferred to (refer: the Refer-To user)
    hangup_after: float = 0.0   # seconds from the last INFO to the agent's own BYE (atxfer)

    @property
    def listens(self) -> bool:
        return self.kind != "unreachable"

    @property
    def answers(self) -> bool:
        return self.kind in ("answer", "press", "refer", "atxfer")

    def scenario_xml(self, name: str = "labcall-uas", occupy: bool = False) -> str:
        """SIPp scenario; occupy=True: answer the first INVITE and keep it
        (see occupy()), behave like this for every later one."""
        if not self.listens:
            raise ValueError("unreachable() has no scenario: nothing listens")
        return scenarios.uas_scenario(self.kind, after=self.after, press_after=self.press_after,
                                      digits=self.digits, digit_gap=self.digit_gap,
                                      occupy=occupy, name=name, target=self.target,
                                      hangup_after=self.hangup_after)

    def __str__(self) -> str:
        if self.kind == "answer":
            return f"answer(after={self.after:g})"
        if self.kind == "press":
            return f"answer_and_press({self.digits!r}, after={self.after:g}, press_after={self.press_after:g})"
        if self.kind == "refer":
            return f"blind_transfer({self.target!r}, after={self.after:g}, refer_after={self.press_after:g})"
        if self.kind == "atxfer":
            return (f"attended_transfer({self.digits!r}, after={self.after:g}, press_after={self.press_after:g}, "
                    f"hangup_after={self.hangup_after:g})")
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


def blind_transfer(target: str, after: float = 0.5, refer_after: float = 1.0) -> Behaviour:
    """Answers `after` s after the INVITE, then `refer_after` s after the 200 OK sends an in-dialog
    REFER with `Refer-To: <sip:<target>@<the PBX>>` (a phone's blind-transfer button), answers the
    NOTIFYs of the transfer (200) and hangs up (its own BYE) once none came for 1 s, as a phone
    does when the transfer is done. A BYE of the PBX before that ends it too."""
    target = str(target)
    if not target.isdigit():
        raise ValueError(f"a transfer target is an extension (digits), got {target!r}")
    return Behaviour("refer", after=_seconds(after, "after"), press_after=_seconds(refer_after, "refer_after"),
                     target=target)


def attended_transfer(digits: str, after: float = 0.5, press_after: float = 1.0, hangup_after: float = 5.0,
                      digit_gap: float = 0.3) -> Behaviour:
    """An attended transfer with Asterisk's feature codes: answers `after` s after the INVITE,
    `press_after` s after the 200 OK sends `digits` (the atxfer code and the target, e.g. "*22001")
    as in-dialog INFOs `digit_gap` apart, then hangs up (its own BYE) `hangup_after` s after the
    last one, which completes the transfer (Asterisk's default atxferdropcall=no)."""
    digits = str(digits)
    if not digits or not set(digits) <= _DTMF:
        raise ValueError(f"DTMF digits must be among 0-9 * # A-D, got {digits!r}")
    return Behaviour("atxfer", after=_seconds(after, "after"), press_after=_seconds(press_after, "press_after"),
                     digits=digits, digit_gap=_seconds(digit_gap, "digit_gap"),
                     hangup_after=_seconds(hangup_after, "hangup_after"))
