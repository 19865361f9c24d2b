"""playbooks/validate.yml as a merge-request pipeline runs it: hosts that do not exist, never contacted."""

from deploy import ROOT, run_playbook


def test_good_declarations_pass_and_plans_are_printed_with_v():
    run = run_playbook("playbooks/validate.yml", ROOT / "tests/inventories/unreachable", verbose=True)
    assert run.ok, run.output
    assert run.recap["pbx-tehran"] == {"ok": 1, "changed": 0, "unreachable": 0, "failed": 0}
    assert ("pbx-tehran: 2001: ring 2001 for 27 s, joined after 7 s by 2002, 909121234567# for 20 s; "
            "then voicemail 2001") in run.output
    assert "pbx-shiraz: 3001: ring 3001 for 7 s; then ring 3002, then add 3003 one by one, 15 s each step" in run.output


def test_bad_declarations_fail_naming_host_extension_field_and_value():
    run = run_playbook("playbooks/validate.yml", ROOT / "tests/inventories/bad")
    assert run.returncode != 0
    for expected in [
        'pbx-tehran: extension 2001: list[2] = "900441234567#": external number blocked by followme_external_deny',
        'pbx-tehran: extension 2001: ring_time = "10": must be an integer, not a string',
        "pbx-tehran: extension 2002: stratgy = \"hunt\": unknown field 'stratgy'; did you mean 'strategy'?",
        "pbx-shiraz: extension 3001: (extension key) = 3001: an extension key must be 1 to 15 digits, "
        "written as a quoted string",
        'pbx-shiraz: extension 3002: list[1] = "3004&PJSIP/666": not accepted',
        "pbx-shiraz: extension 3002: initial_ring_time = 61: must be at most 60",
        'pbx-shiraz: extension 3002: enabled = "yes": must be a boolean (true or false), not a string',
    ]:
        assert expected in run.output, expected
    assert all(run.recap[host]["unreachable"] == 0 for host in ("pbx-tehran", "pbx-shiraz")), run.output


def test_no_answer_loop_is_reported():
    run = run_playbook("playbooks/validate.yml", ROOT / "tests/inventories/bad",
                       extra_vars={"followme": {"2002": {"list": ["2003"], "no_answer": {"extension": "2003"}},
                                                "2003": {"list": ["2004"], "no_answer": {"extension": "2002"}}}})
    assert run.returncode != 0
    assert "extension 2002: no_answer.extension = \"2003\": no_answer chain loops back: 2002 -> 2003 -> 2002" \
        in run.output
