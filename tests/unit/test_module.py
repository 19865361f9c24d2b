"""The followme_dialplan module's file handling, without a PBX (its reloads are proven on the lab)."""

import contextlib
import json
import os
import stat

import pytest
from ansible.module_utils import basic
from ansible.module_utils.basic import AnsibleModule
from ansible_collections.followme.asterisk.plugins.modules import followme_dialplan

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

LINE = '#tryinclude "extensions_followme.conf"'


@pytest.mark.parametrize(("site", "expected"), [
    ("[from-internal]\nexten => 1,1,Hangup()\n", f"[from-internal]\nexten => 1,1,Hangup()\n{LINE}\n"),
    ("[from-internal]\nexten => 1,1,Hangup()", f"[from-internal]\nexten => 1,1,Hangup()\n{LINE}\n"),
    ("", f"{LINE}\n"),
    (f"[a]\n{LINE}\n[b]\n", f"[a]\n{LINE}\n[b]\n"),
    ('[a]\n#include "extensions_followme.conf"\n[b]\n', f"[a]\n{LINE}\n[b]\n"),
    ("[a]\n  #include extensions_followme.conf  \n", f"[a]\n{LINE}\n"),
    ('[a]\n#include "extensions_followme.conf.bak"\n', f'[a]\n#include "extensions_followme.conf.bak"\n{LINE}\n'),
])
def test_one_managed_include_line_and_nothing_else(site, expected):
    assert followme_dialplan.with_include(site) == expected
    assert followme_dialplan.with_include(expected) == expected


@pytest.fixture
def module():
    with patch_module_args({"declarations": {}}):
        yield AnsibleModule(argument_spec={"declarations": {"type": "dict"}})


def test_atomic_write_keeps_the_site_file_owner_and_mode(module, tmp_path):
    site = tmp_path / "extensions.conf"
    site.write_text("[from-internal]\n")
    os.chmod(site, 0o604)
    followme_dialplan.write_atomically(module, str(site), "[from-internal]\n" + LINE + "\n", None)
    assert site.read_text() == f"[from-internal]\n{LINE}\n"
    assert stat.S_IMODE(site.stat().st_mode) == 0o604
    assert [p.name for p in tmp_path.iterdir()] == ["extensions.conf"]  # no temporary file left


def test_managed_file_gets_explicit_owner_group_and_mode(module, tmp_path):
    managed = tmp_path / "extensions_followme.conf"
    followme_dialplan.write_atomically(module, str(managed), "; x\n", {"owner": "root", "group": "root",
                                                                       "mode": "0640"})
    assert stat.S_IMODE(managed.stat().st_mode) == 0o640
    assert not followme_dialplan.attributes_differ(str(managed), "root", "root", "0640")
    assert followme_dialplan.attributes_differ(str(managed), "root", "root", "0644")
    assert followme_dialplan.attributes_differ(str(managed), "root", "no-such-group-here", "0640")
