# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The digest of some code and the data it works on: the name of an answer that code gives for that data.

Pure Python, on the controller and the PBX: the module stamps the file it renders with it
(dialplan.input_stamp), the controller names the answers it keeps between runs (plugin_utils/cache.py).
"""

from __future__ import annotations

import hashlib
import inspect


def source_digest(modules, *parts) -> str:
    """SHA-256 (hex) of the source of the modules and of the parts (str or bytes), each ended by a NUL;
    "" when a module's source cannot be read back (then nothing may be taken as already done)."""
    sha = hashlib.sha256()
    try:
        for module in modules:
            sha.update(inspect.getsource(module).encode("utf-8") + b"\0")
    except (OSError, TypeError):
        return ""
    for part in parts:
        sha.update((part if isinstance(part, bytes) else str(part).encode("utf-8")) + b"\0")
    return sha.hexdigest()
