"""What the tests need from ansible-core, on the lowest supported version (2.17) as on the newest (2.19)."""

from __future__ import annotations

import contextlib
import json

from ansible.module_utils import basic

try:
    from ansible.module_utils.testing import patch_module_args
except ImportError:  # ansible-core < 2.19 has no helper: set the arguments a module reads at start-up

    @contextlib.contextmanager
    def patch_module_args(args=None):
        saved = basic._ANSIBLE_ARGS
        basic._ANSIBLE_ARGS = json.dumps({"ANSIBLE_MODULE_ARGS": args or {}}).encode()
        try:
            yield
        finally:
            basic._ANSIBLE_ARGS = saved

try:
    from ansible.template import trust_as_template
except ImportError:  # ansible-core < 2.19 templates every string it is given: nothing to mark

    def trust_as_template(value):
        return value


__all__ = ["patch_module_args", "trust_as_template"]
