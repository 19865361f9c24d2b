"""Port plan of the lab: which UDP port on the gateway (10.87.0.1) each SIPp agent uses.

Host i owns the block 20000 + 100*i .. 20000 + 100*i + 99 on the gateway:
  +1..+10   devices 2001..2010 (each PBX's PJSIP AOR contact points there)
  +50..+89  callers (SIPp UACs that call into the PBX)
  +99       the carrier (the trunk's AOR contact)
"""

GATEWAY = "10.87.0.1"
EXTENSIONS = [str(e) for e in range(2001, 2011)]


def _block(host_index):
    host_index = int(host_index)
    if host_index < 1:
        raise ValueError(f"host index must be >= 1, got {host_index}")
    return 20000 + 100 * host_index


def device_port(host_index, extension):
    """Gateway UDP port where the device agent for `extension` of host `host_index` listens."""
    ext = int(extension)
    if not 2001 <= ext <= 2010:
        raise ValueError(f"extension must be 2001..2010, got {extension!r}")
    return _block(host_index) + (ext - 2000)


def carrier_port(host_index):
    """Gateway UDP port where the carrier (trunk) agent of host `host_index` listens."""
    return _block(host_index) + 99


def caller_port_range(host_index):
    """Gateway UDP ports free for caller agents (UACs) calling into host `host_index`."""
    base = _block(host_index)
    return range(base + 50, base + 90)
