"""SIPp scenario XML, generated from Python.

Every scenario shares one skeleton:

* message 0 answers an out-of-dialog OPTIONS (Asterisk's qualify) with 200;
* message 1 takes the INVITE and captures its dialog headers into variables
  (the responses and the in-dialog INFO are built from those, never from
  ``[last_*]``, so an in-dialog request in between cannot spoil them);
* the behaviour's own body follows;
* a ``_unexp.main`` section (SIPp's "unexpected message" jump) answers whatever
  else the PBX sends at any moment: CANCEL (200 + 487 to the INVITE), BYE (200,
  end), re-INVITE (200 with SDP, waits for the ACK), OPTIONS/INFO/UPDATE/NOTIFY
  (200). After a non-final message it jumps back to where the call was,
  restoring a pause that was running (``_unexp.retaddr``/``_unexp.pausedaddr``).

SIPp starts one "call" per new Call-ID, so a single agent process answers any
number of INVITEs (and qualify OPTIONS) while it runs.

Only the caller's INVITE has a `retrans` timer: while a retransmission is
pending SIPp sends nothing else in that call (a re-INVITE's 200 would wait),
and nothing is lost on the lab's veth links.
"""

from __future__ import annotations

from xml.sax.saxutils import escape

# Status codes the caller accepts as a final failure of its INVITE.
_FAIL_CODES = [c for c in range(300, 700) if c not in (200,)]

_HEAD = '<?xml version="1.0" encoding="ISO-8859-1" ?>\n<scenario name="{name}">\n'
_TAIL = '  <label id="end"/>\n</scenario>\n'

_SDP = (
    "v=0\n"
    "o=labcall 1 1 IN IP[local_ip_type] [local_ip]\n"
    "s=-\n"
    "c=IN IP[media_ip_type] [media_ip]\n"
    "t=0 0\n"
    "m=audio [media_port] RTP/AVP 0 101\n"
    "a=rtpmap:0 PCMU/8000\n"
    "a=rtpmap:101 telephone-event/8000\n"
    "a=fmtp:101 0-16\n"
    "a=sendrecv\n"
)


def _send(text: str, extra: str = "") -> str:
    return f"  <send{extra}>\n    <![CDATA[\n{text.rstrip()}\n\n    ]]>\n  </send>\n"


def _response(code: str, reason: str, *, sdp: bool = False, invite: bool = True) -> str:
    """A response to the captured INVITE (invite=True) or to the last request."""
    if invite:
        head = (
            f"SIP/2.0 {code} {reason}\n"
            "Via:[$inv_via]\n"
            "From:[$inv_from]\n"
            "To:[$inv_to];tag=[pid]SIPpTag01[call_number]\n"
            "Call-ID:[$inv_callid]\n"
            "CSeq:[$inv_cseq]\n"
        )
    else:
        head = (
            f"SIP/2.0 {code} {reason}\n"
            "[last_Via:]\n"
            "[last_From:]\n"
            "[last_To:]\n"
            "[last_Call-ID:]\n"
            "[last_CSeq:]\n"
        )
    head += "Contact: <sip:[local_ip]:[local_port];transport=[transport]>\n"
    head += "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, NOTIFY\n"
    if sdp:
        return head + "Content-Type: application/sdp\nContent-Length: [len]\n\n" + _SDP
    return head + "Content-Length: 0\n"


def _ok_last_tagged() -> str:
    """200 to an out-of-dialog request (OPTIONS): adds a To tag."""
    return (
        "SIP/2.0 200 OK\n"
        "[last_Via:]\n"
        "[last_From:]\n"
        "[last_To:];tag=[pid]SIPpTagOpt[call_number]\n"
        "[last_Call-ID:]\n"
        "[last_CSeq:]\n"
        "Contact: <sip:[local_ip]:[local_port];transport=[transport]>\n"
        "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, NOTIFY\n"
        "Accept: application/sdp\n"
        "Content-Length: 0\n"
    )


def _nop_assign(var: str, value: str) -> str:
    return f'  <nop><action><assign assign_to="{var}" value="{value}"/></action></nop>\n'


_CAPTURE_INVITE = (
    "    <action>\n"
    '      <ereg regexp=".*" search_in="hdr" header="Via:" assign_to="inv_via"/>\n'
    '      <ereg regexp=".*" search_in="hdr" header="From:" assign_to="inv_from"/>\n'
    '      <ereg regexp=".*" search_in="hdr" header="To:" assign_to="inv_to"/>\n'
    '      <ereg regexp=".*" search_in="hdr" header="Call-ID:" assign_to="inv_callid"/>\n'
    '      <ereg regexp=".*" search_in="hdr" header="CSeq:" assign_to="inv_cseq"/>\n'
    + "{contact}"
    "    </action>\n"
)
# SIPp refuses a scenario that assigns a variable it never uses: the Contact
# (target of our in-dialog INFO) is captured only by the "press" behaviour.
_CAPTURE_CONTACT = '      <ereg regexp="sip:[^>;]*" search_in="hdr" header="Contact:" assign_to="inv_contact"/>\n'
# The PBX's address (host:port of its Contact), for the Refer-To of a blind transfer.
_CAPTURE_PBX = ('      <ereg regexp="[0-9]+[.][0-9]+[.][0-9]+[.][0-9]+:[0-9]+" search_in="hdr" header="Contact:" '
                'assign_to="inv_pbx"/>\n')
_CAPTURE_INVITE_WITH_PBX = _CAPTURE_INVITE.format(contact=_CAPTURE_CONTACT + _CAPTURE_PBX)
_CAPTURE_INVITE = _CAPTURE_INVITE.format(contact=_CAPTURE_CONTACT)


def _handlers(*, uas: bool) -> str:
    """The ``_unexp.main`` section: answers anything unexpected, then returns."""
    out = ['  <label id="_unexp.main"/>\n']
    out.append('  <recv request="INVITE" optional="true" next="u_reinvite"/>\n')
    out.append('  <recv request="BYE" optional="true" next="u_bye"/>\n')
    if uas:
        out.append('  <recv request="CANCEL" optional="true" next="u_cancel"/>\n')
    out.append('  <recv request="ACK" optional="true" next="u_return"/>\n')
    for method in ("OPTIONS", "INFO", "UPDATE", "NOTIFY"):
        out.append(f'  <recv request="{method}" optional="true" next="u_ok"/>\n')
    # Stray responses (a retransmitted 200 to our INFO or BYE, a late 1xx).
    for code in (100, 180, 183, 200):
        out.append(f'  <recv response="{code}" optional="true" next="u_return"/>\n')
    out.append('  <recv request="MESSAGE" next="u_ok"/>\n')

    # 200 to a re-INVITE (with SDP), then its ACK.
    out.append('  <label id="u_reinvite"/>\n')
    out.append(_send(_response("200", "OK", sdp=True, invite=False)))
    out.append('  <recv request="ACK" timeout="5000" ontimeout="u_return" next="u_return"/>\n')

    out.append('  <label id="u_ok"/>\n')
    out.append(_send(_response("200", "OK", invite=False)))
    out.append('  <nop next="u_return"/>\n')

    out.append('  <label id="u_bye"/>\n')
    out.append(_send(_response("200", "OK", invite=False)))
    out.append('  <nop next="end"/>\n')

    if uas:
        # CANCEL: 200 to it; 487 to the INVITE unless we already answered it.
        out.append('  <label id="u_cancel"/>\n')
        out.append(_send(_response("200", "OK", invite=False)))
        out.append('  <nop test="answered" next="u_return"/>\n')
        out.append(_send(_response("487", "Request Terminated")))
        out.append('  <recv request="ACK" timeout="5000" ontimeout="end" next="end"/>\n')

    # Back to where the call was (restores a pause that was running).
    out.append('  <label id="u_return"/>\n')
    out.append(
        "  <nop>\n    <action>\n"
        '      <pauserestore variable="_unexp.pausedaddr"/>\n'
        '      <jump variable="_unexp.retaddr"/>\n'
        '      <assign assign_to="_unexp.retaddr" value="0"/>\n'
        "    </action>\n  </nop>\n"
    )
    return "".join(out)


def _ms(seconds: float) -> int:
    return max(0, int(round(seconds * 1000)))


def uas_scenario(kind: str, *, after: float = 0.0, press_after: float = 0.0,  # noqa: PLR0912 (one branch per kind)
                 digits: str = "", digit_gap: float = 0.3, occupy: bool = False,
                 name: str = "labcall-uas", target: str = "", hangup_after: float = 0.0) -> str:
    """Scenario for a device or carrier agent.

    kind: "ring" (100/180, never answers), "answer" (180, 200 after `after` s,
    stays until BYE), "busy" (486 at once), "press" (like answer, then one
    in-dialog INFO per digit, the first `press_after` s after the 200).

    occupy=True: the first INVITE this agent gets is answered at once and kept
    (the call that makes the device "in use"); every later one follows `kind`.
    A SIPp global variable remembers that the first one came.

    "refer" (a blind transfer): like answer, then `press_after` s after the 200 an in-dialog REFER
    to `target` at the PBX; 202, NOTIFYs and the PBX's BYE are answered (own BYE 5 s after the 202
    if none comes). "atxfer" (an attended transfer by feature code): like press, then its own BYE
    `hangup_after` s after the last INFO.
    """
    if kind not in ("ring", "answer", "busy", "press", "refer", "atxfer"):
        raise ValueError(f"unknown UAS kind {kind!r}")
    if kind == "refer" and not target.isdigit():
        raise ValueError(f"a REFER target is an extension (digits), got {target!r}")
    out = [_HEAD.format(name=escape(name))]
    if occupy:
        out.append('  <Global variables="occupied"/>\n')
    out.append('  <recv request="OPTIONS" optional="true" next="oodoptions"/>\n')
    capture = {"press": _CAPTURE_INVITE, "atxfer": _CAPTURE_INVITE, "refer": _CAPTURE_INVITE_WITH_PBX}.get(
        kind, _CAPTURE_INVITE.replace(_CAPTURE_CONTACT, ""))
    out.append('  <recv request="INVITE">\n' + capture + "  </recv>\n")
    # Declare "answered" as a double (0) so the CANCEL handler can test it.
    out.append(_nop_assign("answered", "0"))
    out.append(_send(_response("100", "Trying")))
    if occupy:
        out.append('  <nop test="occupied" next="behave"/>\n')
        out.append(_nop_assign("occupied", "1"))
        out.append(_send(_response("180", "Ringing")))
        out.append(_nop_assign("answered", "1"))
        out.append(_send(_response("200", "OK", sdp=True)))
        out.append('  <recv request="ACK"/>\n')
        out.append('  <recv request="BYE"/>\n')
        out.append(_send(_response("200", "OK", invite=False)))
        out.append('  <nop next="end"/>\n')
        out.append('  <label id="behave"/>\n')
    if kind == "busy":
        out.append(_send(_response("486", "Busy Here")))
        out.append('  <recv request="ACK" timeout="5000" ontimeout="end" next="end"/>\n')
    else:
        out.append(_send(_response("180", "Ringing")))
        if kind == "ring":
            # Everything that can end this call (CANCEL) goes through _unexp.main.
            out.append('  <recv request="CANCEL" next="u_cancel"/>\n')
        else:
            if _ms(after):
                out.append(f'  <pause milliseconds="{_ms(after)}"/>\n')
            out.append(_nop_assign("answered", "1"))
            out.append(_send(_response("200", "OK", sdp=True)))
            out.append('  <recv request="ACK"/>\n')
            if kind in ("press", "atxfer"):
                for i, digit in enumerate(digits):
                    gap = press_after if i == 0 else digit_gap
                    if _ms(gap):
                        out.append(f'  <pause milliseconds="{_ms(gap)}"/>\n')
                    out.append(_send(_info(digit)))
                    out.append(f'  <recv response="200" timeout="5000" ontimeout="after_info{i}"/>\n')
                    out.append(f'  <label id="after_info{i}"/>\n')
            if kind == "atxfer":
                # Hang up (our BYE): completes the attended transfer. A BYE of the PBX before
                # that ends the call through _unexp.main.
                if _ms(hangup_after):
                    out.append(f'  <pause milliseconds="{_ms(hangup_after)}"/>\n')
                out.append(_send(_in_dialog("BYE")))
                out.append('  <recv response="200" timeout="5000" ontimeout="end" next="end"/>\n')
            if kind == "refer":
                if _ms(press_after):
                    out.append(f'  <pause milliseconds="{_ms(press_after)}"/>\n')
                out.append(_send(_in_dialog("REFER", f"Refer-To: <sip:{target}@[$inv_pbx]>\n"
                                                       "Referred-By: <sip:[local_ip]:[local_port]>\n")))
                out.append('  <recv response="202" timeout="5000" ontimeout="refer_bye"/>\n')
                # The NOTIFYs of the transfer (sipfrag: 100, 180, 200) come back to back: they are
                # taken here, in the main flow, not by _unexp.main. After 1 s without one the
                # transfer is done: hang up, as a phone does.
                out.append('  <label id="refer_notify"/>\n')
                out.append('  <recv request="NOTIFY" timeout="1000" ontimeout="refer_bye"/>\n')
                out.append(_send(_response("200", "OK", invite=False)))
                out.append('  <nop next="refer_notify"/>\n')
                out.append('  <label id="refer_bye"/>\n')
                out.append(_send(_in_dialog("BYE")))
                out.append('  <recv response="200" timeout="5000" ontimeout="end" next="end"/>\n')
            if kind not in ("refer", "atxfer"):
                out.append('  <recv request="BYE"/>\n')
                out.append(_send(_response("200", "OK", invite=False)))
                out.append('  <nop next="end"/>\n')
    out.append('  <label id="oodoptions"/>\n')
    out.append(_send(_ok_last_tagged()))
    out.append('  <nop next="end"/>\n')
    out.append(_handlers(uas=True))
    out.append(_TAIL)
    return "".join(out)


def _info(digit: str) -> str:
    return (
        "INFO [$inv_contact] SIP/2.0\n"
        "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]\n"
        "From:[$inv_to];tag=[pid]SIPpTag01[call_number]\n"
        "To:[$inv_from]\n"
        "Call-ID:[$inv_callid]\n"
        "CSeq: [cseq] INFO\n"
        "Max-Forwards: 70\n"
        "Contact: <sip:[local_ip]:[local_port];transport=[transport]>\n"
        "Content-Type: application/dtmf-relay\n"
        "Content-Length: [len]\n"
        "\n"
        f"Signal={digit}\n"
        "Duration=250\n"
    )


def _in_dialog(method: str, extra: str = "") -> str:
    """A request of ours (the called side) inside the dialog of the captured INVITE."""
    return (
        f"{method} [$inv_contact] SIP/2.0\n"
        "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]\n"
        "From:[$inv_to];tag=[pid]SIPpTag01[call_number]\n"
        "To:[$inv_from]\n"
        "Call-ID:[$inv_callid]\n"
        f"CSeq: [cseq] {method}\n"
        "Max-Forwards: 70\n"
        "Contact: <sip:[local_ip]:[local_port];transport=[transport]>\n"
        + extra +
        "Content-Length: 0\n"
    )


def _sip_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def uac_scenario(*, caller_name: str = "Alice", caller_user: str = "caller",  # noqa: PLR0913
                 hold: float | None = 1.0, name: str = "labcall-uac", headers: str = "",
                 digits: str = "", press_after: float = 1.0, digit_gap: float = 0.3) -> str:
    """Scenario of the caller: INVITE [service]@remote, then either a 2xx (ACK,
    hold `hold` s, BYE) or a final failure (ACK). The PBX may hang up first (its
    BYE is answered by _unexp.main). hold=None: stay until the PBX hangs up.

    The From display name is also sent as P-Asserted-Identity, which Asterisk
    reads only for an endpoint with trust_id_inbound=yes.

    headers: extra header lines of the INVITE ("X-Lab-Trunk: carrier\n").
    digits: DTMF sent after the 2xx as in-dialog INFOs (the first `press_after` s
    after the ACK, then `digit_gap` s apart); `hold` counts from the last one.
    """
    if digits and not set(digits) <= set("0123456789*#ABCD"):
        raise ValueError(f"DTMF digits must be among 0-9 * # A-D, got {digits!r}")
    if any(ch in headers for ch in "[]<>") or (headers and not headers.endswith("\n")):
        raise ValueError(f"extra headers must be plain 'Name: value' lines, got {headers!r}")
    display = _sip_quote(caller_name) if caller_name else ""
    from_value = f"{display} <sip:{caller_user}@[local_ip]:[local_port]>".strip()
    out = [_HEAD.format(name=escape(name))]
    out.append(_send(
        "INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0\n"
        "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]\n"
        f"From: {from_value};tag=[pid]SIPpTag00[call_number]\n"
        "To: <sip:[service]@[remote_ip]:[remote_port]>\n"
        "Call-ID: [call_id]\n"
        "CSeq: 1 INVITE\n"
        f"Contact: <sip:{caller_user}@[local_ip]:[local_port];transport=[transport]>\n"
        "Max-Forwards: 70\n"
        f"P-Asserted-Identity: {from_value}\n"
        "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, NOTIFY\n"
        + headers +
        "Content-Type: application/sdp\n"
        "Content-Length: [len]\n"
        "\n" + _SDP, ' retrans="500"'))
    for code in (100, 180, 181, 182, 183):
        out.append(f'  <recv response="{code}" optional="true"/>\n')
    for code in _FAIL_CODES:
        out.append(f'  <recv response="{code}" optional="true" next="failed"/>\n')
    out.append('  <recv response="200" rrs="true"/>\n')
    out.append(_send(
        "ACK [next_url] SIP/2.0\n"
        "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]\n"
        f"From: {from_value};tag=[pid]SIPpTag00[call_number]\n"
        "To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]\n"
        "Call-ID: [call_id]\n"
        "CSeq: 1 ACK\n"
        f"Contact: <sip:{caller_user}@[local_ip]:[local_port];transport=[transport]>\n"
        "Max-Forwards: 70\n"
        "Content-Length: 0\n"))
    for i, digit in enumerate(digits):
        gap = press_after if i == 0 else digit_gap
        if _ms(gap):
            out.append(f'  <pause milliseconds="{_ms(gap)}"/>\n')
        out.append(_send(
            "INFO [next_url] SIP/2.0\n"
            "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]\n"
            f"From: {from_value};tag=[pid]SIPpTag00[call_number]\n"
            "To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]\n"
            "Call-ID: [call_id]\n"
            f"CSeq: {2 + i} INFO\n"
            f"Contact: <sip:{caller_user}@[local_ip]:[local_port];transport=[transport]>\n"
            "Max-Forwards: 70\n"
            "Content-Type: application/dtmf-relay\n"
            "Content-Length: [len]\n"
            "\n"
            f"Signal={digit}\n"
            "Duration=250\n"))
        out.append(f'  <recv response="200" timeout="5000" ontimeout="uac_info{i}"/>\n')
        out.append(f'  <label id="uac_info{i}"/>\n')
    hold_ms = 24 * 3600 * 1000 if hold is None else _ms(hold)
    if hold_ms:
        out.append(f'  <pause milliseconds="{hold_ms}"/>\n')
    out.append(_send(
        "BYE [next_url] SIP/2.0\n"
        "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]\n"
        f"From: {from_value};tag=[pid]SIPpTag00[call_number]\n"
        "To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]\n"
        "Call-ID: [call_id]\n"
        f"CSeq: {2 + len(digits)} BYE\n"
        f"Contact: <sip:{caller_user}@[local_ip]:[local_port];transport=[transport]>\n"
        "Max-Forwards: 70\n"
        "Content-Length: 0\n"))
    out.append('  <recv response="200" timeout="5000" ontimeout="end" next="end"/>\n')
    # A final failure: ACK it (same branch as the INVITE, from [last_Via]).
    out.append('  <label id="failed"/>\n')
    out.append(_send(
        "ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0\n"
        "[last_Via:]\n"
        "[last_From:]\n"
        "[last_To:]\n"
        "Call-ID: [call_id]\n"
        "CSeq: 1 ACK\n"
        "Max-Forwards: 70\n"
        "Content-Length: 0\n"))
    out.append('  <nop next="end"/>\n')
    out.append(_handlers(uas=False))
    out.append(_TAIL)
    return "".join(out)
