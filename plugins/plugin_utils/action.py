# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What every action plugin of the collection does first, on the controller."""

from __future__ import annotations

import sys

from ansible.errors import AnsibleActionFail

from .declarations import MissingLibrary, require_libraries


def require_controller_libraries() -> None:
    """Fail the task with one line naming the pip package when jsonschema or fastjsonschema is missing."""
    try:
        require_libraries(sys.executable)
    except MissingLibrary as exc:
        raise AnsibleActionFail(str(exc)) from None
