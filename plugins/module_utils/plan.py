"""Where a follow-me call's timeline is decided: one complete declaration -> one call plan.

A call to extension E runs the plan's steps in order; each step rings some legs
for `seconds` and ends early when someone answers (then the call is theirs) or
every leg has failed. When the last step ends unanswered the call goes to the
plan's no_answer destination. ../shared/SPEC.md "Ring strategies" is the
contract this file implements; `timeline()` spells a plan out as the rings a
call sees when nobody answers, and is what the call tests compare the PBX with.

Pure Python, no Ansible: the dialplan renderer and the plan printer consume it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Tuple

STRATEGIES = (
    "ringall", "ringall-prim", "hunt", "hunt-prim", "memoryhunt", "memoryhunt-prim",
    "firstavailable", "firstnotonphone", "ringallv2", "ringallv2-prim",
)

# How a step picks the legs it rings (the dialplan interpreter knows the same words):
ALL = "all"      # every leg at once
EACH = "each"    # one leg after the other, `seconds` each (hunt)
GROW = "grow"    # leg k joins after (k-1)*`seconds` and rings on to the end (memoryhunt)
FIRST_AVAILABLE = "avail"  # only the first leg whose device is not unavailable
FIRST_IDLE = "idle"        # only the first leg whose device is idle


@dataclass(frozen=True)
class Leg:
    """One thing to ring: an internal extension's device or an external number."""

    entry: str          # as declared: "2002" or "909121234567#"
    own: bool = False   # the called extension's own ring (pre-ring, or E in ringallv2): kept when the primary is busy
    delay: int = 0      # seconds after its step starts before it rings
    ring: Optional[int] = None  # the entry's own ring_time (seconds it rings once it started), None: to the step's end
    timed: bool = False  # declared as {number, delay, ring_time}: describe() spells its timing out

    @property
    def external(self) -> bool:
        return self.entry.endswith("#")

    @property
    def number(self) -> str:
        """What is dialed: the extension, or the external digits without the #."""
        return self.entry[:-1] if self.external else self.entry


@dataclass(frozen=True)
class Step:
    pick: str
    seconds: int
    legs: Tuple[Leg, ...]


@dataclass(frozen=True)
class NoAnswer:
    kind: str  # hangup | voicemail | extension | goto
    target: Tuple[str, ...] = ()  # (mailbox,) | (extension,) | (context, extension, priority)

    @classmethod
    def from_declaration(cls, value) -> NoAnswer:
        if value == "hangup":
            return cls("hangup")
        (kind, target), = value.items()
        if kind == "goto":
            return cls(kind, (target["context"], target["extension"], str(target.get("priority", 1))))
        return cls(kind, (target,))

    def describe(self) -> str:
        if self.kind == "hangup":
            return "hang up"
        if self.kind == "goto":
            return "go to " + ",".join(self.target)
        return f"{self.kind} {self.target[0]}"


@dataclass(frozen=True)
class Schedule:
    """When follow-me is active: inside (or outside) any of the ranges (times, weekdays, days, months)."""

    active: str  # inside | outside
    ranges: Tuple[Tuple[str, str, str, str], ...]
    timezone: Optional[str] = None

    @classmethod
    def from_declaration(cls, value) -> Optional[Schedule]:
        if not value:
            return None
        ranges = tuple(tuple(item.get(name, "*") for name in ("times", "weekdays", "days", "months"))
                       for item in value["ranges"])
        return cls(value.get("active", "inside"), ranges, value.get("timezone"))

    def describe(self) -> str:
        spans = " or ".join(" ".join(part for part in item if part != "*") or "always" for item in self.ranges)
        zone = f" ({self.timezone})" if self.timezone else ""
        return f"active {self.active} {spans}{zone}, else the site's normal handling"


@dataclass(frozen=True)
class Ring:
    """One leg ringing in a timeline: from `start` to `end` seconds after the call began."""

    entry: str
    start: int
    end: int


@dataclass(frozen=True)
class CallPlan:
    extension: str
    strategy: str
    steps: Tuple[Step, ...]
    no_answer: NoAnswer
    primary: Optional[str] = None  # -prim: when this internal extension is busy, only own legs ring
    confirm_calls: bool = False
    cid_name_prefix: Optional[str] = None
    alert_info: Optional[str] = None
    music_on_hold: Optional[str] = None
    announcement: Optional[str] = None
    confirm_prompt: Optional[str] = None   # None: the site's (role variable)
    too_late_prompt: Optional[str] = None  # None: the site's (role variable)
    external_cid: Optional[Tuple[str, str]] = None  # (mode, number or ""): caller ID on external legs
    schedule: Optional[Schedule] = None  # None: always active
    enabled: bool = True  # the declared default of the user's switch (rendered when a toggle code is set)

    def timeline(self, unavailable=(), busy=(), refusing=()):
        """The rings of a call nobody answers, and when it reaches no_answer.

        `unavailable` and `busy` are internal extensions whose devices are in that state;
        they change what `firstavailable` / `firstnotonphone` / `-prim` ring, as on the PBX.
        `refusing` devices answer every INVITE with 486 Busy: they are rung (a Ring that ends
        where it starts) and their leg fails at once.
        """
        primary_busy = self.primary is not None and self.primary in busy
        not_idle = set(busy) | set(unavailable)
        rings, now = [], 0
        for step in self.steps:
            legs = [leg for leg in step.legs if leg.own or not primary_busy]
            if step.pick == FIRST_AVAILABLE:
                legs = [leg for leg in legs if leg.external or leg.entry not in unavailable][:1]
            elif step.pick == FIRST_IDLE:
                legs = [leg for leg in legs if leg.external or leg.entry not in not_idle][:1]
            if not legs:
                continue
            if step.pick == GROW:
                now = _grow(rings, now, step, legs, unavailable=unavailable, refusing=refusing)
                continue
            rounds = [[leg] for leg in legs] if step.pick == EACH else [legs]
            one_leg = step.pick != ALL  # hunt, firstavailable, firstnotonphone: a leg's turn is its own timing
            for legs_of_round in rounds:
                # An unavailable device fails at once; a round of nothing but such legs takes no time.
                ringing = [leg for leg in legs_of_round if leg.external or leg.entry not in unavailable]
                ends = []
                for leg in ringing:
                    start = now + leg.delay
                    if one_leg:
                        end = start + (leg.ring or step.seconds)
                    else:
                        end = min(start + leg.ring, now + step.seconds) if leg.ring else now + step.seconds
                    end = start if _refuses(leg, refusing) else end
                    rings.append(Ring(leg.entry, start, end))
                    if not _refuses(leg, refusing):
                        ends.append(end)
                if ends:  # the Dial ends when its last leg stops ringing (or at its timeout)
                    now = max(ends)
        return rings, now

    def describe(self) -> str:
        """One line for people: "2001: ring 2001 for 7 s; then 2001, 2002 together for 20 s; then voicemail 2001"."""
        parts = []
        for step in self.steps:
            names = [leg.entry for leg in step.legs]
            joined = ", ".join(names)
            late = [leg for leg in step.legs if leg.delay]
            if any(leg.timed for leg in step.legs):
                text = _timed_words(step)
            elif late:
                early = ", ".join(leg.entry for leg in step.legs if not leg.delay)
                text = (f"ring {early} for {step.seconds} s, joined after {late[0].delay} s by "
                        f"{', '.join(leg.entry for leg in late)} for {step.seconds - late[0].delay} s")
            elif len(names) == 1:
                text = f"ring {joined} for {step.seconds} s"
            elif step.pick == EACH:
                text = f"ring {joined} one at a time, {step.seconds} s each"
            elif step.pick == GROW:
                text = (f"ring {names[0]}, then add {', '.join(names[1:])} one by one, {step.seconds} s each step, "
                        f"all ringing on until {len(names) * step.seconds} s")
            elif step.pick == FIRST_AVAILABLE:
                text = f"ring the first available of {joined} for {step.seconds} s"
            elif step.pick == FIRST_IDLE:
                text = f"ring the first idle of {joined} for {step.seconds} s"
            else:
                text = f"ring {joined} together for {step.seconds} s"
            parts.append(text)
        parts.append(self.no_answer.describe())
        text = f"{self.extension}: " + "; then ".join(parts)
        if self.primary:
            text += f" (if {self.primary} is busy, only {self.extension}'s own ring)" if any(
                leg.own for step in self.steps for leg in step.legs) else f" (if {self.primary} is busy, nobody)"
        return text + "".join(f"; {words}" for words in self.feature_words())

    def feature_words(self):
        """What the issue-9 features add to a plan, in words (appended to describe())."""
        if self.external_cid:
            mode, number = self.external_cid
            yield {"fixed": f"external legs show caller ID {number}",
                   "outside_fixed": f"external legs show caller ID {number} for calls from outside",
                   "dialed": "external legs show the DID dialed for calls in on a DID",
                   "force_dialed": f"external legs show the DID dialed, else {number}"}.get(
                       mode, f"external legs show caller ID mode {mode}")
        if self.schedule:
            yield self.schedule.describe()
        if not self.enabled:
            yield "switched off unless its user switches it on"


def _timed_words(step: Step) -> str:
    """describe() of a step with {number, delay, ring_time} entries: every leg's own seconds."""
    seconds = step.seconds
    if step.pick in (ALL, GROW):
        spans = []
        timeout = seconds * len(step.legs) if step.pick == GROW else seconds
        for index, leg in enumerate(step.legs):
            start = leg.delay + (index * seconds if step.pick == GROW else 0)
            end = min(start + leg.ring, timeout) if leg.ring else timeout
            spans.append(f"{leg.entry} {start}-{end} s")
        intro = (f"ring one by one, each joining {seconds} s after the one before, until {timeout} s"
                 if step.pick == GROW else f"ring together for {seconds} s")
        return f"{intro}: {', '.join(spans)}"
    turns = [f"{leg.entry}{f' after {leg.delay} s' if leg.delay else ''} for {leg.ring or seconds} s"
             for leg in step.legs]
    intro = {EACH: "ring one at a time", FIRST_AVAILABLE: "ring the first available of",
             FIRST_IDLE: "ring the first idle of"}[step.pick]
    return f"{intro}: {', '.join(turns)}"


def _refuses(leg: Leg, refusing) -> bool:
    return not leg.external and leg.entry in refusing


def _grow(rings: list, now: int, step: Step, legs, *, unavailable, refusing) -> int:
    """A memoryhunt step: leg k joins (k-1)*T seconds in and keeps ringing to the end of the last
    round (one INVITE per device). Leading unavailable legs take no time, as their rounds would not;
    a later unavailable leg still has its round of T seconds (the legs before it ring)."""
    rounds, joining = 0, []
    for leg in legs:
        missing = not leg.external and leg.entry in unavailable
        if missing and rounds == 0:
            continue
        rounds += 1
        if not missing:
            joining.append((leg, now + (rounds - 1) * step.seconds + leg.delay))
    timeout = now + rounds * step.seconds
    found = []
    for leg, start in joining:
        end = start if _refuses(leg, refusing) else min(start + leg.ring, timeout) if leg.ring else timeout
        found.append(Ring(leg.entry, min(start, end), end))
    rings.extend(found)
    return max((ring.end for ring in found), default=now)  # the Dial ends when its last leg stops


def entry_number(item) -> str:
    """The number of a list entry: the plain string, or the `number` of a {number, delay, ring_time} entry."""
    return item["number"] if isinstance(item, Mapping) else item


def _leg(entry: str, timing: Mapping, offset: int = 0) -> Leg:
    """The leg of a list entry; a {number, delay, ring_time} entry joins `delay` s later and rings `ring_time` s."""
    item = timing.get(entry)
    if item is None:
        return Leg(entry, delay=offset)
    return Leg(entry, delay=offset + item.get("delay", 0), ring=item.get("ring_time"), timed=True)


CID_MODES = ("default", "fixed", "outside_fixed", "dialed", "force_dialed")


def _external_cid(declaration: Mapping) -> Optional[Tuple[str, str]]:
    """(mode, number) of a declaration's external caller ID, None for mode default (the caller's passes)."""
    mode = declaration.get("external_cid_mode") or "default"
    if mode == "default":
        return None
    return mode, declaration.get("external_cid_number") or ""


def build_plan(extension: str, declaration: Mapping) -> CallPlan:
    """The call plan of one complete, valid declaration (see declarations.Checker)."""
    timing = {entry_number(item): item for item in declaration["list"] if isinstance(item, Mapping)}
    entries = [entry_number(item) for item in declaration["list"]]
    strategy = declaration["strategy"]
    pre, seconds = declaration["initial_ring_time"], declaration["ring_time"]
    base = strategy[:-len("-prim")] if strategy.endswith("-prim") else strategy
    primary = None
    if base == "ringallv2":
        legs = [Leg(extension, own=True)] + [_leg(entry, timing, pre) for entry in entries if entry != extension]
        steps = (Step(ALL, pre + seconds, tuple(legs)),)
        if strategy.endswith("-prim"):
            primary = extension
    else:
        pick = {"ringall": ALL, "hunt": EACH, "memoryhunt": GROW,
                "firstavailable": FIRST_AVAILABLE, "firstnotonphone": FIRST_IDLE}[base]
        steps = (Step(ALL, pre, (Leg(extension, own=True),)),) if pre > 0 else ()
        steps += (Step(pick, seconds, tuple(_leg(entry, timing) for entry in entries)),)
        if strategy.endswith("-prim") and not entries[0].endswith("#"):
            primary = entries[0]  # external entries are never busy
    return CallPlan(
        extension=extension,
        strategy=strategy,
        steps=steps,
        no_answer=NoAnswer.from_declaration(declaration["no_answer"]),
        primary=primary,
        confirm_calls=declaration["confirm_calls"],
        cid_name_prefix=declaration["cid_name_prefix"],
        alert_info=declaration["alert_info"],
        music_on_hold=declaration["music_on_hold"],
        announcement=declaration["announcement"],
        confirm_prompt=declaration.get("confirm_prompt"),
        too_late_prompt=declaration.get("too_late_prompt"),
        external_cid=_external_cid(declaration),
        schedule=Schedule.from_declaration(declaration.get("schedule")),
        enabled=declaration.get("enabled", True) is not False,
    )


def written(declarations: Mapping[str, Mapping], with_disabled: bool = False) -> dict:
    """{extension: enabled} of the declarations that get a plan: the enabled ones (disabled ones get the
    site's normal handling); with_disabled, the disabled ones too, for a PBX where users may switch their
    follow-me on from the phone (followme_toggle_code)."""
    return {extension: declaration.get("enabled", True) is not False
            for extension, declaration in declarations.items() if declaration["enabled"] or with_disabled}


def build_plans(declarations: Mapping[str, Mapping], with_disabled: bool = False) -> dict:
    """Plans of the declarations written() names, by extension (a disabled one's plan has `enabled` False)."""
    return {extension: build_plan(extension, declarations[extension])
            for extension in sorted(written(declarations, with_disabled), key=lambda item: (len(item), item))}
