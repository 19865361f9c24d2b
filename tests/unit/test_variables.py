"""Reading a host's declarations from task_vars: only the strings that hold a template are templated."""

from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar
from ansible_collections.followme.asterisk.plugins.plugin_utils.variables import read_variables
from compat import trust_as_template


def _templar(**variables):
    templar = Templar(loader=DataLoader(), variables=variables)
    calls = []

    def template(value):
        calls.append(value)
        return templar.template(value)

    return template, calls


def test_a_templated_value_inside_a_declaration_renders_and_nothing_else_is_templated():
    template, calls = _templar(site_prefix="FM", ring=25, second="2003")
    followme = {
        "2001": {"list": ["2002", "909121234567#"], "cid_name_prefix": trust_as_template("{{ site_prefix }} "),
                 "ring_time": 20, "confirm_calls": False, "no_answer": {"voicemail": "2001"}},
        "2002": {"list": [trust_as_template("{{ second }}")], "ring_time": trust_as_template("{{ ring }}"),
                 "alert_info": None},
    }
    variables = read_variables({"followme": followme, "other": "{{ undefined_thing }}"}, ("followme", "missing"),
                               template)
    assert variables == {"followme": {
        "2001": {"list": ["2002", "909121234567#"], "cid_name_prefix": "FM ", "ring_time": 20,
                 "confirm_calls": False, "no_answer": {"voicemail": "2001"}},
        "2002": {"list": ["2003"], "ring_time": 25, "alert_info": None},
    }}
    assert len(calls) == 3  # one call per templated string, never the whole mapping
    declaration = variables["followme"]["2002"]
    assert type(declaration["ring_time"]) is int and type(declaration["list"][0]) is str


def test_values_come_back_as_plain_python_types():
    template, calls = _templar()
    value = read_variables({"v": {"a": [1, 2.5, True, None, "x", ("t",)], 7: {"b": False}}}, ("v",), template)["v"]
    assert value == {"a": [1, 2.5, True, None, "x", ["t"]], 7: {"b": False}}
    assert type(value["a"][0]) is int and type(value["a"][1]) is float and value["a"][2] is True
    assert calls == []
