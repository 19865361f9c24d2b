"""Call-test library: SIPp agents as the devices of a lab PBX, real calls
through a real Asterisk, and the timeline of what every agent saw.

    from labcall import place_call, answer, ring, busy, unreachable, answer_and_press, occupy

    result = place_call(lab_host, "2002", {"2002": answer(after=2)})
    assert result.answered_by == "2002", result.format()
    assert result.invites("2002")[0] < 0.5

See README.md beside this file.
"""

from lab.ports import EXTENSIONS, GATEWAY, caller_port_range, carrier_port, device_port

from .agents import SippAgent, stop_all
from .behaviours import (
    Behaviour,
    answer,
    answer_and_press,
    answer_silent,
    attended_transfer,
    blind_transfer,
    busy,
    ring,
    unreachable,
)
from .call import (
    CALLER,
    CARRIER,
    Answer,
    CallResult,
    Event,
    Occupied,
    caller_channels,
    device_state,
    ensure_contacts,
    occupy,
    parse_channels,
    parse_contacts,
    place_call,
)
from .hosts import (
    Host,
    LabError,
    asterisk_rx,
    get_host,
    lab_hosts,
    load_state,
    ssh,
)
from .trace import Headers, SipMessage, display_name, parse_trace, read_trace, uri_user

__all__ = [
    "Behaviour", "answer", "answer_and_press", "answer_silent", "busy", "ring", "unreachable",
    "blind_transfer", "attended_transfer",
    "place_call", "occupy", "Answer", "CallResult", "Event", "Occupied", "CARRIER", "CALLER",
    "device_state", "ensure_contacts", "caller_channels", "parse_channels", "parse_contacts",
    "Host", "LabError", "load_state", "lab_hosts", "get_host", "ssh", "asterisk_rx",
    "EXTENSIONS", "GATEWAY", "device_port", "carrier_port", "caller_port_range",
    "SippAgent", "stop_all", "Headers", "SipMessage", "parse_trace", "read_trace",
    "display_name", "uri_user",
]
