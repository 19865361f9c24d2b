"""Render call plans as one Asterisk dialplan file (pbx_config's extensions.conf syntax).

Each extension gets two priorities: a Gosub into the shared subroutine
`<context>-call` carrying the plan as data, and its no-answer destination.
The logic lives once, in the shared contexts below, so reload time and memory
stay flat as extensions are added. The subroutine mirrors plan.CallPlan.timeline().

Everything written into the file is checked against a strict pattern here,
whatever the caller validated before (a direct module call, --start-at-task):
dial strings are digits, * and + only; free text (caller-ID prefix, Alert-Info)
must match the schema's pattern for it and travels base64-encoded. Decoded free
text is only ever the value of a Set(): never inside an expression ($[...]) or an
application's argument list, where Asterisk would evaluate it.

Extensions are written in descending order: pbx_config inserts each extension
into the context's list, kept sorted and walked from its head, so descending
order makes every insertion O(1) (ascending is the O(N^2) worst case).
`dialplan show` lists the sorted list, whatever the order of the file.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import re
import sys
from dataclasses import dataclass
from typing import Dict, Mapping, Tuple

from . import plan as _plan_module
from .digest import source_digest
from .plan import ALL, CallPlan

FILE_NAME = "extensions_followme.conf"
HEADER = "; Managed by Ansible (role followme): do not edit, changes are overwritten."

_NAME = re.compile(r"[A-Za-z0-9_-]{1,79}\Z")
_SOUND = re.compile(r"[A-Za-z0-9_-]{1,64}(/[A-Za-z0-9_-]{1,64}){0,4}\Z")
_DEVICE = re.compile(r"[A-Za-z0-9_/-]{1,40}\{extension\}[A-Za-z0-9_@.-]{0,40}\Z")
_NUMBER = re.compile(r"\+?[0-9*]{1,30}\Z")
_GOTO_EXTEN = re.compile(r"[A-Za-z0-9*+][A-Za-z0-9*#+]{0,39}\Z")
_PRIORITY = re.compile(r"([1-9][0-9]{0,4}|[A-Za-z][A-Za-z0-9_]{0,39})\Z")
# Free text: the schema's patterns (schemas/followme.schema.json; a unit test keeps them equal), anchored
# with \Z so that a trailing newline does not pass as `$` would let it.
FREE_TEXT = {
    "cid_name_prefix": re.compile(r"[A-Za-z0-9_ .:+\u00C0-\u00D6\u00D8-\u00F6\u00F8-\u024F\u0388-\u03CE\u0400-\u045F"
                                  r"\u05D0-\u05EA\u0620-\u064A\u0660-\u0669\u0671-\u06D3\u06F0-\u06F9-]{1,20}\Z"),
    "alert_info": re.compile(r"[A-Za-z0-9<>:/._;=@?&%~+-]{1,128}\Z"),
}
_CID_MODE = re.compile(r"(fixed|outside_fixed|dialed|force_dialed)\Z")
_CID_NUMBER = re.compile(r"\+?[0-9]{1,20}\Z")
_TIME_FIELDS = (
    re.compile(r"(\*|([01][0-9]|2[0-3]):[0-5][0-9]-([01][0-9]|2[0-3]):[0-5][0-9])\Z"),
    re.compile(r"(\*|(mon|tue|wed|thu|fri|sat|sun)(-(mon|tue|wed|thu|fri|sat|sun))?)\Z"),
    re.compile(r"(\*|([1-9]|[12][0-9]|3[01])(-([1-9]|[12][0-9]|3[01]))?)\Z"),
    re.compile(r"(\*|(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)(-(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov"
               r"|dec))?)\Z"),
)
_TOGGLE_CODE = re.compile(r"\*[0-9]{1,8}\Z")
_TIMEZONE = re.compile(r"[A-Za-z][A-Za-z0-9_+-]{0,29}(/[A-Za-z0-9_+-]{1,30}){0,2}\Z")


@dataclass(frozen=True)
class Settings:
    """How the site's PBX is wired (the role variables of the same names, without followme_)."""

    context: str
    device: str
    outbound_context: str
    extension_context: str
    voicemail_context: str
    confirm_prompt: str
    too_late_prompt: str
    confirm_timeout: int
    toggle_code: str = ""  # the users' own switch (e.g. *21); empty: no switch, disabled declarations not written

    def check(self) -> None:
        for name in ("context", "outbound_context", "extension_context", "voicemail_context"):
            _require(_NAME, getattr(self, name), name)
        _require(_DEVICE, self.device, "device")
        _require(_SOUND, self.confirm_prompt, "confirm_prompt")
        _require(_SOUND, self.too_late_prompt, "too_late_prompt")
        if self.toggle_code:
            _require(_TOGGLE_CODE, self.toggle_code, "toggle_code")
        if not (isinstance(self.confirm_timeout, int) and 1 <= self.confirm_timeout <= 60):
            raise ValueError(f"confirm_timeout must be an integer from 1 to 60, not {self.confirm_timeout!r}")

    def device_of(self, variable: str) -> str:
        return self.device.replace("{extension}", "${" + variable + "}")


def _require(pattern, value, what: str) -> str:
    if not isinstance(value, str) or not pattern.match(value):
        raise ValueError(f"refusing to write {what} {value!r} into the dialplan: it does not match {pattern.pattern}")
    return value


def free_text(plan: CallPlan, field: str) -> str:
    """A free-text field of a plan, re-checked and base64-encoded ("" when it is null)."""
    value = getattr(plan, field)
    if value is None:
        return ""
    return base64.b64encode(_require(FREE_TEXT[field], value, field).encode("utf-8")).decode("ascii")


def _leg_code(leg) -> str:
    kind = "e" if leg.own else ("x" if leg.external else "i")
    return f"{_seconds(leg.delay, 0, 'delay')}{kind}{_require(_NUMBER, leg.number, 'list entry')}" + (
        f"t{_seconds(leg.ring, 1, 'entry ring_time')}" if getattr(leg, "ring", None) is not None else "")


def _seconds(value, low: int, what: str) -> int:
    if not (isinstance(value, int) and not isinstance(value, bool) and low <= value <= 999):
        raise ValueError(f"refusing to write {what} {value!r} into the dialplan: not an integer from {low} to 999")
    return value


def gosub_arguments(plan: CallPlan) -> str:
    """The data a plan becomes: EXTENSION,PRIMARY,CONFIRM,CID64,ALERT64,MOH,ANNOUNCEMENT,
    CONFIRM_PROMPT,TOO_LATE_PROMPT,CALLER_ID,SCHEDULE,ON,STEP..."""
    steps = []
    for step in plan.steps:
        pick = "pre" if step.pick == ALL and all(leg.own for leg in step.legs) else step.pick
        steps.append(f"{pick}:{int(step.seconds)}:" + "-".join(_leg_code(leg) for leg in step.legs))
    fields = [
        _require(_NUMBER, plan.extension, "extension"),
        _require(_NUMBER, plan.primary, "primary") if plan.primary else "",
        "1" if plan.confirm_calls else "0",
        free_text(plan, "cid_name_prefix"),
        free_text(plan, "alert_info"),
        _require(_NAME, plan.music_on_hold, "music_on_hold") if plan.music_on_hold else "",
        _require(_SOUND, plan.announcement, "announcement") if plan.announcement else "",
    ]
    on = "1" if getattr(plan, "enabled", True) else "0"  # ARG12, read by the users' switch (TOGGLE_CHECK)
    return ",".join(fields + feature_arguments(plan) + [on] + steps)


def feature_arguments(plan: CallPlan) -> list:
    """ARG8..ARG11 of the Gosub: CONFIRM_PROMPT,TOO_LATE_PROMPT,CALLER_ID,SCHEDULE (empty: the site's / none)."""
    return [
        _require(_SOUND, plan.confirm_prompt, "confirm_prompt") if plan.confirm_prompt else "",
        _require(_SOUND, plan.too_late_prompt, "too_late_prompt") if plan.too_late_prompt else "",
        _external_cid_argument(plan),
        _schedule_argument(plan),
    ]


def _schedule_argument(plan: CallPlan) -> str:
    """ARG11: <i|o>~RANGE~RANGE...; RANGE = TIMES!WEEKDAYS!DAYS!MONTHS!TIMEZONE (GotoIfTime's fields)."""
    schedule = getattr(plan, "schedule", None)
    if not schedule:
        return ""
    if schedule.active not in ("inside", "outside") or not schedule.ranges:
        raise ValueError(f"refusing to write schedule {schedule!r} into the dialplan")
    zone = _require(_TIMEZONE, schedule.timezone, "schedule timezone") if schedule.timezone else ""
    ranges = []
    for item in schedule.ranges:
        if len(item) != len(_TIME_FIELDS):
            raise ValueError(f"refusing to write schedule range {item!r} into the dialplan")
        ranges.append("!".join(_require(_TIME_FIELDS[index], value, "schedule range field")
                               for index, value in enumerate(item)) + "!" + zone)
    return "~".join([schedule.active[0]] + ranges)


def _external_cid_argument(plan: CallPlan) -> str:
    """ARG10: MODE:NUMBER of the caller ID on external legs, empty for mode default."""
    if not plan.external_cid:
        return ""
    mode, number = plan.external_cid
    _require(_CID_MODE, mode, "external_cid_mode")
    if number or mode != "dialed":
        _require(_CID_NUMBER, number, "external_cid_number")
    return f"{mode}:{number}"


def no_answer_application(plan: CallPlan, settings: Settings) -> str:
    target = plan.no_answer.target
    if plan.no_answer.kind == "hangup":
        return "Hangup()"
    if plan.no_answer.kind == "voicemail":
        return f"VoiceMail({_require(_NUMBER, target[0], 'mailbox')}@{settings.voicemail_context},u)"
    if plan.no_answer.kind == "extension":
        return f"Goto({settings.extension_context},{_require(_NUMBER, target[0], 'no_answer extension')},1)"
    context, exten, priority = target
    return (f"Goto({_require(_NAME, context, 'goto context')},{_require(_GOTO_EXTEN, exten, 'goto extension')},"
            f"{_require(_PRIORITY, priority, 'goto priority')})")


def _comment(text: str) -> str:
    return "; " + re.sub(r"[^\w .,:;()+#*/-]", "?", text)


def render(plans: Mapping[str, CallPlan], settings: Settings, stamp: str = "") -> str:
    """The whole managed file for one host (extensions in descending order, see the module's docstring).
    stamp: the input_stamp() of what the plans were built from, written into the header (see reused())."""
    settings.check()
    c = settings.context
    lines = [f"[{c}]", f"; Entered at <extension>@{c}; one Gosub per extension, logic in [{c}-call]."]
    for extension, plan in sorted(plans.items(), reverse=True):  # descending: see the module's docstring
        if not getattr(plan, "enabled", True) and not settings.toggle_code:
            continue  # without the users' switch a disabled declaration is simply not there
        lines += [
            _comment(plan.describe()),
            f"exten => {_require(_NUMBER, extension, 'extension')},1,Gosub({c}-call,s,1({gosub_arguments(plan)}))",
            f" same => n{'' if getattr(plan, 'enabled', True) else '(disabled)'},"
            f"{no_answer_application(plan, settings)}",
        ]
    body = "\n".join(lines) + "\n\n" + SUBROUTINES.format(
        c=c,
        device_arg2=settings.device_of("ARG2"),
        device_num=settings.device_of("num"),
        device_leg=settings.device_of("fm_num"),
        outbound=settings.outbound_context,
        extension=settings.extension_context,
        confirm_prompt=settings.confirm_prompt,
        too_late_prompt=settings.too_late_prompt,
        timeout=settings.confirm_timeout,
        toggle_check=TOGGLE_CHECK.format(c=c) if settings.toggle_code else "",
    ) + _toggle_context(plans, settings)
    return _framed(body, c, stamp)


def _framed(body: str, context: str, stamp: str) -> str:
    if stamp and not _STAMP.match(stamp):
        raise ValueError(f"refusing to write the input stamp {stamp!r}: not 64 hexadecimal digits")
    revision = hashlib.sha256(body.encode("utf-8")).hexdigest()[:16]
    return "".join((f"{HEADER}\n", f"; Input {stamp}\n" if stamp else "",
                    f"; Revision {revision}: the follow-me declarations of this host, see `dialplan show {context}`.\n\n"
                    f"{body}\n[{context}-revision]\nexten => s,1,NoOp({revision})\n"))


_STAMP = re.compile(r"[0-9a-f]{64}\Z")


def input_stamp(declarations: Mapping[str, Mapping], settings: Settings, with_disabled: bool) -> str:
    """A digest of everything the rendered file depends on: this renderer's code (plan.py and this file)
    and its inputs. Two runs with the same stamp render the same text; "" when the code cannot be read."""
    inputs = {"declarations": declarations, "settings": dataclasses.asdict(settings), "with_disabled": with_disabled}
    return source_digest((_plan_module, sys.modules[__name__]),
                         json.dumps(inputs, sort_keys=True, separators=(",", ":")))


def reused(text: str, context: str, stamp: str) -> bool:
    """True when text is a file render() wrote with this stamp and nobody changed since: then it is what
    rendering the same inputs again would make, and the rendering can be skipped. A hand edit breaks the
    revision the body was written with, so such a file is rendered and written again."""
    if not text or not stamp or f"\n; Input {stamp}\n" not in text[:len(HEADER) + 80]:
        return False
    empty = _framed("", context, stamp)  # the frame alone; its revision has the same length as any other
    head = empty.index(f"\n[{context}-revision]\n")
    if len(text) < len(empty):
        return False
    return _framed(text[head:len(text) - (len(empty) - head)], context, stamp) == text


_REVISION = re.compile(r"^exten => s,1,NoOp\(([0-9a-f]{16})\)$", re.M)
_REVISION_CONTEXT = re.compile(r"^\[([A-Za-z0-9_-]+)-revision\]$", re.M)


def _last_lines_first(pattern, text: str):
    """pattern's first match in text, looked for in the last lines first, where render() writes the revision
    (a search from the top reads megabytes at 10,000 extensions)."""
    text = text or ""
    tail = text[text.rfind("\n", 0, max(len(text) - 200, 0)) + 1:]  # from the start of a line
    return pattern.search(tail) or pattern.search(text)


def revision_of(text: str):
    """The revision a rendered file carries, or None."""
    match = _last_lines_first(_REVISION, text)
    return match.group(1) if match else None


def context_of(text: str):
    """The follow-me context a rendered file was made for, or None."""
    match = _last_lines_first(_REVISION_CONTEXT, text)
    return match.group(1) if match else None


def counts(text: str) -> Dict[str, Tuple[int, int]]:
    """{context: (extensions, priorities)} of a file this module rendered, as `dialplan show` counts them."""
    result: Dict[str, list] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("["):
            current = result.setdefault(line[1:line.index("]")], [0, 0])
        elif line.startswith("exten => "):
            current[0] += 1
            current[1] += 1
        elif line.startswith(" same => "):
            current[1] += 1
    return {context: (value[0], value[1]) for context, value in result.items()}


def _toggle_context(plans: Mapping[str, CallPlan], settings: Settings) -> str:
    """[<context>-toggle]: the users' switch and one pattern hint for every extension's lamp (nothing without
    a toggle code). One dynamic hint (Asterisk makes <code><extension> when a phone subscribes to it) instead of
    one per extension: 10,000 static hints made every reload about 10 s slower. Its first character is
    written as a set, _[*]21X., not _*21X.: with the trie matcher (extenpatternmatchnew = yes) Asterisk 22
    keeps resolving a pattern that starts with a plain character to the pattern itself rather than to the
    hint it made from it, and the lamp stays off (seen on the lab with _*21X., _*21XXXX, _921XXXX)."""
    if not settings.toggle_code:
        return ""
    code = _require(_TOGGLE_CODE, settings.toggle_code, "toggle_code")
    prefix = settings.device.split("{extension}")[0]
    context = TOGGLE.format(c=settings.context, code=code, rest=code[1:], prefix=prefix, plen=len(prefix),
                            clen=len(code))
    return "\n" + context


# The users' switch: the state a user chose lives in AstDB FOLLOWME/<extension> (on/off); without one the
# declaration's enabled decides: ARG12 in a call (no lookup in the follow-me context, whose extensions
# Asterisk's default matcher compares one by one), the label "disabled" on the no-answer priority for *21.
TOGGLE_CHECK = """\
 same => n,Set(LOCAL(on)=${{IF($["${{ARG12}}" = "0"]?off:on)}})
 same => n,ExecIf(${{DB_EXISTS(FOLLOWME/${{ARG1}})}}?Set(LOCAL(on)=${{FILTER(nof,${{DB_RESULT}})}}))
 same => n,GotoIf($["${{on}}" = "off"]?inactive)
"""

TOGGLE = """\
[{c}-toggle]
; include => {c}-toggle in the context the phones dial from. {code} from a device switches the follow-me
; of its own extension (the channel {prefix}<extension>-...) on or off: AstDB FOLLOWME/<extension>, and
; the lamp Custom:FOLLOWME<extension>, the (pattern) hint of {code}<extension> (INUSE: on). Deploys never touch them.
exten => {code},1,Set(fm_base=${{FILTER(A-Za-z0-9_/@.-,${{CHANNEL(name):0:-9}})}})
 same => n,Set(fm_ext=${{FILTER(0123456789,${{fm_base:{plen}}})}})
 same => n,GotoIf($["${{fm_ext}}" = "" | "${{fm_base}}" != "{prefix}${{fm_ext}}"]?refuse)
 same => n,GotoIf(${{DIALPLAN_EXISTS({c},${{fm_ext}},1)}}?:refuse)
 same => n,Set(fm_on=${{IF(${{DIALPLAN_EXISTS({c},${{fm_ext}},disabled)}}?off:on)}})
 same => n,ExecIf(${{DB_EXISTS(FOLLOWME/${{fm_ext}})}}?Set(fm_on=${{FILTER(nof,${{DB_RESULT}})}}))
 same => n,Set(fm_on=${{IF($["${{fm_on}}" = "on"]?off:on)}})
 same => n,Set(DB(FOLLOWME/${{fm_ext}})=${{fm_on}})
 same => n,Set(DEVICE_STATE(Custom:FOLLOWME${{fm_ext}})=${{IF($["${{fm_on}}" = "on"]?INUSE:NOT_INUSE)}})
 same => n,Answer()
 same => n,Playback(${{IF($["${{fm_on}}" = "on"]?activated:de-activated)}})
 same => n,Hangup()
 same => n(refuse),Answer()
 same => n,Playback(feature-not-avail-line)
 same => n,Hangup()
exten => _[*]{rest}X.,hint,Custom:FOLLOWME${{EXTEN:{clen}}}
"""


# The shared logic. {c} is the follow-me context; doubled braces are Asterisk's own.
SUBROUTINES = """\
[{c}-call]
; Gosub({c}-call,s,1(EXTENSION,PRIMARY,CONFIRM,CID_NAME_PREFIX,ALERT_INFO,MUSIC_ON_HOLD,ANNOUNCEMENT,
;                     CONFIRM_PROMPT,TOO_LATE_PROMPT,CALLER_ID,SCHEDULE,ON,STEP...))
;   CONFIRM_PROMPT, TOO_LATE_PROMPT: the extension's own prompts (empty: the site's).
;   SCHEDULE: <i|o>~RANGE~... follow-me is active inside (i) or outside (o) the ranges, see [{c}-schedule];
;             when it is not, the call goes on at priority 2 of <EXTENSION>@{extension} (the site's own handling).
;   CALLER_ID: MODE:NUMBER of the caller ID on external legs (empty: the caller's passes), see [{c}-xcid].
;   ON: 1 when the declaration is enabled, 0 when not (the users' switch, if any, decides over it).
;   PRIMARY: for -prim strategies, the extension whose busy device keeps the list from ringing.
;   CID_NAME_PREFIX and ALERT_INFO are base64, decoded only as the value of a Set(). STEP = PICK:SECONDS:LEG-LEG-...
;   PICK: pre (the extension alone), all, each (one at a time), grow (leg k joins (k-1)*SECONDS in,
;         one Dial of k*SECONDS: legs already ringing are not rung again),
;         avail (first not unavailable), idle (first not in use).
;   LEG = <delay><kind><number>[t<ring time>]; kind e: the extension's own ring, i: internal entry,
;         x: external entry; t: the entry's own ring time (each/avail/idle: its turn is delay + ring time).
;   Device states are read only where they decide something (-prim primary, avail, idle, grow).
; Returns only when nobody answered: the caller goes on to the no-answer destination.
exten => s,1,Set(LOCAL(busy)=0)
{toggle_check} same => n,GotoIf($["${{ARG11}}" = ""]?active)
 same => n,Gosub({c}-schedule,s,1(${{ARG11}}))
 same => n,GotoIf(${{GOSUB_RETVAL}}?active)
 same => n(inactive),Set(fm_back=${{ARG1}})
 same => n,StackPop()
 same => n,Goto({extension},${{fm_back}},2)
 same => n(active),GotoIf($["${{ARG2}}" = ""]?start)
 same => n,Set(LOCAL(state)=${{DEVICE_STATE({device_arg2})}})
 same => n,Set(LOCAL(busy)=$["${{state}}" = "INUSE" | "${{state}}" = "BUSY" | "${{state}}" = "RINGINUSE" | "${{state}}" = "ONHOLD"])
 same => n(start),Set(__FM_CALLER=${{CHANNEL}})
 same => n,Set(__FM_CONFIRM=${{ARG3}})
 same => n,Set(__FM_ALERT=${{ARG5}})
 same => n,Set(__FM_LEGOPTS=${{IF($["${{ARG5}}" = ""]?:b({c}-predial^s^1))}})
 same => n,Set(LOCAL(name)=${{CALLERID(name)}})
 same => n,Set(__FM_CPROMPT=${{IF($["${{ARG8}}" = ""]?{confirm_prompt}:${{ARG8}})}})
 same => n,Set(__FM_LPROMPT=${{IF($["${{ARG9}}" = ""]?{too_late_prompt}:${{ARG9}})}})
 same => n,Set(__FM_XCID=${{ARG10}})
 same => n,ExecIf($["${{ARG4}}" != ""]?Gosub({c}-prefix,s,1(${{ARG4}})))
 same => n,Set(LOCAL(opts)=${{IF($["${{ARG6}}" = ""]?:m(${{ARG6}}))}}${{IF($[${{ARG3}}]?U({c}-taken))}})
 same => n,Set(LOCAL(played)=0)
 same => n,Set(LOCAL(s)=13)
 same => n(step),GotoIf($[${{s}} > ${{ARGC}}]?done)
 same => n,Set(LOCAL(pick)=${{CUT(ARG${{s}},:,1)}})
 same => n,Set(LOCAL(secs)=${{CUT(ARG${{s}},:,2)}})
 same => n,Set(LOCAL(legs)=${{CUT(ARG${{s}},:,3)}})
 same => n,Set(LOCAL(n)=${{FIELDQTY(legs,-)}})
 same => n,Set(LOCAL(round)=1)
 same => n(round),Set(LOCAL(j)=${{IF($["${{pick}}" = "each"]?${{round}}:1)}})
 same => n,Set(LOCAL(hi)=${{IF($["${{pick}}" = "each"]?${{round}}:${{n}})}})
 same => n,Set(LOCAL(dial)=)
 same => n,Set(LOCAL(list)=0)
 same => n,Set(LOCAL(grown)=0)
 same => n,Set(LOCAL(wait)=${{secs}})
 same => n(leg),GotoIf($[${{j}} > ${{hi}}]?dial)
 same => n,Set(LOCAL(leg)=${{CUT(legs,-,${{j}})}})
 same => n,Set(LOCAL(kind)=${{FILTER(eix,${{leg}})}})
 same => n,Set(LOCAL(num)=${{CUT(leg,${{kind}},2)}})
 same => n,Set(LOCAL(ring)=${{CUT(num,t,2)}})
 same => n,Set(LOCAL(num)=${{CUT(num,t,1)}})
 same => n,Set(LOCAL(j)=$[${{j}} + 1])
 same => n,GotoIf($[${{busy}} & "${{kind}}" != "e"]?leg)
 same => n,GotoIf($["${{pick}}" = "grow"]?grow)
 same => n,GotoIf($[("${{pick}}" != "avail" & "${{pick}}" != "idle") | "${{kind}}" = "x"]?add)
 same => n,Set(LOCAL(state)=${{DEVICE_STATE({device_num})}})
 same => n,GotoIf($["${{pick}}" = "avail" & ("${{state}}" = "UNAVAILABLE" | "${{state}}" = "INVALID")]?leg)
 same => n,GotoIf($["${{pick}}" = "idle" & "${{state}}" != "NOT_INUSE"]?leg)
 same => n,Goto(add)
 same => n(grow),Set(LOCAL(state)=${{IF($["${{kind}}" = "x"]?NOT_INUSE:${{DEVICE_STATE({device_num})}})}})
 same => n,Set(LOCAL(unav)=$["${{state}}" = "UNAVAILABLE" | "${{state}}" = "INVALID"])
 same => n,GotoIf($[${{unav}} & ${{grown}} = 0]?leg)
 same => n,Set(LOCAL(grown)=$[${{grown}} + 1])
 same => n,GotoIf(${{unav}}?leg)
 same => n,Set(LOCAL(delay)=$[${{CUT(leg,${{kind}},1)}} + (${{grown}} - 1) * ${{secs}}])
 same => n,Set(LOCAL(leg)=${{delay}}${{kind}}${{num}}${{IF($["${{ring}}" = ""]?:t${{ring}})}})
 same => n(add),Set(LOCAL(dial)=${{dial}}${{IF($["${{dial}}" = ""]?:&)}}Local/${{leg}}@{c}-leg)
 same => n,Set(LOCAL(list)=${{IF($["${{kind}}" = "e"]?${{list}}:1)}})
 same => n,GotoIf($["${{pick}}" != "each" & "${{pick}}" != "avail" & "${{pick}}" != "idle"]?turn)
 same => n,Set(LOCAL(wait)=$[${{CUT(leg,${{kind}},1)}} + ${{IF($["${{ring}}" = ""]?${{secs}}:${{ring}})}}])
 same => n(turn),GotoIf($["${{pick}}" = "avail" | "${{pick}}" = "idle"]?dial:leg)
 same => n(dial),GotoIf($["${{dial}}" = ""]?next)
 same => n,ExecIf($["${{pick}}" = "grow"]?Set(LOCAL(wait)=$[${{grown}} * ${{secs}}]))
 same => n,GotoIf($["${{ARG7}}" = "" | ${{list}} = 0 | ${{played}} = 1]?ring)
 same => n,Answer()
 same => n,Playback(${{ARG7}})
 same => n,Set(LOCAL(played)=1)
 same => n,Set(LOCAL(opts)=${{IF($["${{ARG6}}" = ""]?r)}}${{opts}})
 same => n(ring),Dial(${{dial}},${{wait}},${{opts}})
 same => n,GotoIf($["${{DIALSTATUS}}" = "ANSWER"]?answered)
 same => n,ExecIf($["${{DIALSTATUS}}" = "BUSY" & "${{pick}}" = "pre" & "${{ARG2}}" = "${{ARG1}}"]?Set(LOCAL(busy)=1))
 same => n(next),Set(LOCAL(round)=$[${{round}} + 1])
 same => n,GotoIf($["${{pick}}" = "each" & ${{round}} <= ${{n}}]?round)
 same => n,Set(LOCAL(s)=$[${{s}} + 1])
 same => n,Goto(step)
 same => n(answered),Hangup()
 same => n(done),Set(CALLERID(name)=${{name}})
 same => n,Return()

[{c}-leg]
; Local/<delay><kind><number>@{c}-leg: one leg of a follow-me call (see [{c}-call]).
exten => _X.,1,Set(fm_kind=${{FILTER(eix,${{EXTEN}})}})
 same => n,Set(fm_num=${{CUT(EXTEN,${{fm_kind}},2)}})
 same => n,Set(fm_ring=${{CUT(fm_num,t,2)}})
 same => n,Set(fm_num=${{CUT(fm_num,t,1)}})
 same => n,Wait(${{CUT(EXTEN,${{fm_kind}},1)}})
 same => n,GotoIf($["${{fm_kind}}" = "x"]?external)
 same => n,Dial({device_leg},${{fm_ring}},${{FM_LEGOPTS}})
 same => n,Hangup(${{IF($["${{DIALSTATUS}}" = "BUSY"]?17:19)}})
 same => n(external),ExecIf($["${{FM_XCID}}" != ""]?Gosub({c}-xcid,s,1))
 same => n,Dial(Local/${{fm_num}}@{outbound},${{fm_ring}},${{IF($[${{FM_CONFIRM}}]?U({c}-confirm))}})
 same => n,Hangup(${{IF($["${{DIALSTATUS}}" = "BUSY"]?17:19)}})

[{c}-confirm]
; Dial(...,U({c}-confirm)) on an external leg that answered: 1 accepts; 2, anything else or silence declines
; that leg only; a leg answering after the call was taken hears the too-late prompt. The check and the
; setting of the caller's FM_TAKEN are one step under a lock, so of two legs accepting at once one wins.
exten => s,1,GotoIf($["${{SHARED(FM_TAKEN,${{FM_CALLER}})}}" = "1"]?late)
 same => n,Read(fm_key,${{FM_CPROMPT}},1,,1,{timeout})
 same => n,GotoIf($["${{fm_key}}" != "1"]?decline)
 same => n,Set(fm_lock=${{LOCK(followme-${{FM_CALLER}})}})
 same => n,Set(fm_taken=${{SHARED(FM_TAKEN,${{FM_CALLER}})}})
 same => n,Set(SHARED(FM_TAKEN,${{FM_CALLER}})=1)
 same => n,Set(fm_lock=${{UNLOCK(followme-${{FM_CALLER}})}})
 same => n,GotoIf($["${{fm_taken}}" = "1"]?late)
 same => n,Return()
 same => n(late),Playback(${{FM_LPROMPT}})
 same => n(decline),Set(GOSUB_RESULT=CONTINUE)
 same => n,Return()

[{c}-taken]
; Dial(...,U({c}-taken)) on the leg that won: external legs answering later hear they are too late.
exten => s,1,Set(fm_lock=${{LOCK(followme-${{FM_CALLER}})}})
 same => n,Set(SHARED(FM_TAKEN,${{FM_CALLER}})=1)
 same => n,Set(fm_lock=${{UNLOCK(followme-${{FM_CALLER}})}})
 same => n,Return()

[{c}-xcid]
; Gosub({c}-xcid,s,1) on an external leg: its caller ID number from FM_XCID = MODE:NUMBER. A call from
; outside is one whose channel carries FROM_DID (set by the site's inbound route, as FreePBX does),
; read through FILTER so only digits and + can reach the caller ID.
exten => s,1,Set(LOCAL(mode)=${{CUT(FM_XCID,:,1)}})
 same => n,Set(LOCAL(fixed)=${{CUT(FM_XCID,:,2)}})
 same => n,Set(LOCAL(did)=${{FILTER(0123456789+,${{FROM_DID}})}})
 same => n,Set(LOCAL(num)=${{IF($["${{mode}}" = "fixed"]?${{fixed}})}})
 same => n,ExecIf($["${{mode}}" = "outside_fixed" & "${{did}}" != ""]?Set(LOCAL(num)=${{fixed}}))
 same => n,ExecIf($[("${{mode}}" = "dialed" | "${{mode}}" = "force_dialed") & "${{did}}" != ""]?Set(LOCAL(num)=${{did}}))
 same => n,ExecIf($["${{mode}}" = "force_dialed" & "${{did}}" = ""]?Set(LOCAL(num)=${{fixed}}))
 same => n,ExecIf($["${{num}}" != ""]?Set(CALLERID(num)=${{num}}))
 same => n,Return()

[{c}-schedule]
; Gosub({c}-schedule,s,1(<i|o>~RANGE~...)): returns 1 when follow-me is active now, else 0.
; RANGE = TIMES!WEEKDAYS!DAYS!MONTHS!TIMEZONE, the fields of GotoIfTime (TIMEZONE empty: local time).
exten => s,1,Set(LOCAL(n)=${{FIELDQTY(ARG1,~)}})
 same => n,Set(LOCAL(i)=2)
 same => n,Set(LOCAL(inside)=0)
 same => n(range),GotoIf($[${{i}} > ${{n}}]?done)
 same => n,Set(LOCAL(r)=${{CUT(ARG1,~,${{i}})}})
 same => n,Set(LOCAL(i)=$[${{i}} + 1])
 same => n,GotoIfTime(${{CUT(r,!,1)}},${{CUT(r,!,2)}},${{CUT(r,!,3)}},${{CUT(r,!,4)}},${{CUT(r,!,5)}}?hit)
 same => n,Goto(range)
 same => n(hit),Set(LOCAL(inside)=1)
 same => n(done),Return(${{IF($["${{CUT(ARG1,~,1)}}" = "i"]?${{inside}}:$[1 - ${{inside}}])}})

[{c}-prefix]
; Gosub({c}-prefix,s,1(PREFIX)): put the base64 PREFIX before the caller-ID name.
exten => s,1,Set(CALLERID(name)=${{BASE64_DECODE(${{ARG1}})}}${{CALLERID(name)}})
 same => n,Return()

[{c}-predial]
; Dial(...,b({c}-predial^s^1)) on an internal leg's channel before it is called, only when the plan has an
; Alert-Info (FM_LEGOPTS): legs without one run no pre-dial handler at all.
exten => s,1,Set(PJSIP_HEADER(add,Alert-Info)=${{BASE64_DECODE(${{FM_ALERT}})}})
 same => n,Return()
"""
