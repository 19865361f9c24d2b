"""Every pattern of the schema means the same to Python and to ECMA-262 (editors, check-jsonschema).

Validation on the controller runs the schema's patterns with Python's `re` (jsonschema, with `$` as
the very end, and fastjsonschema); an editor with the yaml-language-server modeline runs them as
JavaScript regular expressions, and check-jsonschema through regress (an ECMA-262 engine). A pattern
that reads the same in both can still mean something else (`\\w` takes "é" in Python, not in
JavaScript; `$` takes a trailing newline in Python): the engines are run over one corpus here, and
every verdict must agree.
"""

from __future__ import annotations

import json
import pathlib
import re
import shutil
import subprocess

import fastjsonschema
import pytest
import regress
from ansible_collections.followme.asterisk.plugins.plugin_utils.declarations import _strict_validator

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "schemas" / "followme.schema.json").read_text())

# node evaluates each pattern as editors do: with the u flag (JSON Schema's recommendation and what
# vscode-json-languageservice tries first) and without it (its fallback).
NODE = r"""
const {patterns, strings} = JSON.parse(require("fs").readFileSync(0, "utf8"));
const out = {};
for (const flags of ["u", ""]) {
  out[flags] = patterns.map(p => {
    const r = new RegExp(p, flags);
    return strings.map(s => r.test(s) ? 1 : 0).join("");
  });
}
process.stdout.write(JSON.stringify(out));
"""


def schema_patterns(node=SCHEMA) -> set[str]:
    found = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "pattern" and isinstance(value, str):
                found.add(value)
            elif key == "patternProperties" and isinstance(value, dict):
                found.update(value)
            found |= schema_patterns(value)
    elif isinstance(node, list):
        for item in node:
            found |= schema_patterns(item)
    return found


def corpus() -> list[str]:
    """Values users write, and their near misses: every ASCII character and a few hostile non-ASCII ones
    in every position of them, line ends, and runs of each kind of character at every length limit."""
    seeds = ["2001", "909121234567#", "+4930123456#", "*72#", "from-internal", "followme", "s", "n", "1",
             "vm_2001", "custom/please-hold", "a/b/c/d/e", "FM ", "Sales: 2.x_+-",
             "<http://localhost>;info=alert-external", "<sip:x@y?a=b&c=%20~>", "default", "MOH-1_x",
             "extensions.conf", "extensions_custom.conf", "extensions_followme.conf",
             "0640", "640", "0755", "0600", "0644", "0400",
             "/etc/asterisk", "asterisk", "PJSIP/{extension}", "*21", "*7", "*12345678",
             "08:00-17:00", "00:00-23:59", "12:30-13:15", "19:00-07:00", "23:59-00:00",
             "mon-fri", "sat", "sun-mon", "tue",
             "1-15", "31", "2-3", "10", "jan-mar", "dec", "feb", "nov-jan", "Europe/Berlin", "Asia/Tehran", "UTC"]
    odd = [chr(c) for c in range(128)] + list("éßЖش۲١中ſKİ\u00a0\u2028\u2029\ufeff\u0301") + ["😀", "\U0001d7d8"]
    strings = set(seeds) | set(odd) | {""}
    for seed in seeds:
        for char in odd:
            strings.update({char + seed, seed + char, seed[:1] + char + seed[1:], seed[:-1] + char + seed[-1:]})
        strings.update({seed + "\n", seed + "\r\n", "\n" + seed, seed + "\n" + seed, seed + seed})
    for run in ["1", "*", "a", "Z", "_", "-", " ", ".", "é", "/", "1/"]:
        for length in (1, 14, 15, 16, 19, 20, 21, 29, 30, 31, 39, 40, 41, 63, 64, 65, 79, 80, 127, 128, 129):
            strings.update({run * length, "a" + run * length, run * length + "#", "+" + run * length + "#"})
    return sorted(strings)


def python_verdicts(patterns: list[str], strings: list[str]) -> dict[str, list[str]]:
    """What the controller's validation decides, by each engine it uses."""
    strict = _strict_validator()
    verdicts = {"jsonschema (strict)": [], "fastjsonschema": [], "re.search, $ -> \\Z": []}
    for pattern in patterns:
        schema = {"type": "string", "pattern": pattern}
        validator = strict(schema)
        fast = fastjsonschema.compile(schema)
        anchored = re.compile(re.sub(r"\$$", r"\\Z", pattern))

        def fast_ok(string, fast=fast):
            try:
                fast(string)
            except fastjsonschema.JsonSchemaException:
                return False
            return True

        verdicts["jsonschema (strict)"].append("".join("01"[validator.is_valid(s)] for s in strings))
        verdicts["fastjsonschema"].append("".join("01"[fast_ok(s)] for s in strings))
        verdicts["re.search, $ -> \\Z"].append("".join("01"[anchored.search(s) is not None] for s in strings))
    return verdicts


def ecma_verdicts(patterns: list[str], strings: list[str]) -> dict[str, list[str]]:
    """What editors (node's RegExp, with and without u) and check-jsonschema (regress) decide."""
    node = shutil.which("node") or shutil.which("nodejs")
    assert node, "node is needed (Debian package nodejs, see scripts/install-system-deps.sh)"
    done = subprocess.run([node, "-e", NODE], input=json.dumps({"patterns": patterns, "strings": strings}),
                          capture_output=True, text=True, check=True, timeout=120)
    by_flags = json.loads(done.stdout)
    verdicts = {"ECMA-262 (node, u)": by_flags["u"], "ECMA-262 (node)": by_flags[""], "regress": []}
    for pattern in patterns:
        compiled = regress.Regex(pattern)
        verdicts["regress"].append("".join("01"[compiled.find(s) is not None] for s in strings))
    return verdicts


def disagreements(patterns: list[str], strings: list[str]) -> list[str]:
    verdicts = python_verdicts(patterns, strings) | ecma_verdicts(patterns, strings)
    reference = "jsonschema (strict)"
    found = []
    for index, pattern in enumerate(patterns):
        for engine, rows in verdicts.items():
            for position, (mine, theirs) in enumerate(zip(verdicts[reference][index], rows[index], strict=True)):
                if mine != theirs:
                    verdict = {"0": "rejects", "1": "accepts"}
                    found.append(f"{pattern!r} on {strings[position]!r}: {reference} {verdict[mine]}, "
                                 f"{engine} {verdict[theirs]}")
    return found


def test_the_schema_has_the_patterns_this_test_knows_of():
    patterns = schema_patterns()
    assert len(patterns) >= 9, patterns
    assert "^[0-9]{1,15}$" in patterns


def test_the_corpus_covers_every_pattern_both_ways():
    """Each pattern accepts some strings of the corpus and rejects others: the comparison is not vacuous."""
    strings = corpus()
    assert len(strings) > 10_000  # README: "about 10,000 strings"
    patterns = sorted(schema_patterns())
    for pattern, row in zip(patterns, python_verdicts(patterns, strings)["jsonschema (strict)"], strict=True):
        assert "0" in row and "1" in row, pattern
        assert row.count("1") >= 5, (pattern, [s for s, v in zip(strings, row, strict=True) if v == "1"])


def test_every_schema_pattern_means_the_same_in_python_and_ecma262():
    patterns = sorted(schema_patterns())
    found = disagreements(patterns, corpus())
    assert not found, f"{len(found)} disagreement(s), e.g.:\n" + "\n".join(found[:40])


@pytest.mark.parametrize(("pattern", "string"), [
    (r"^[\w]{1,3}$", "é"),    # \w: Unicode in Python, ASCII in ECMA-262
    (r"^a.c$", "a\u2028c"),   # . : a line terminator for ECMA-262, not for Python
    (r"^[^a]$", "😀"),         # one code point for Python, two UTF-16 units for ECMA-262 without u
])
def test_the_comparison_finds_a_pattern_that_differs(pattern, string):
    """The harness is able to fail: patterns known to differ between the engines are reported."""
    python = python_verdicts([pattern], [string])
    ecma = ecma_verdicts([pattern], [string])
    assert len({row[0] for row in (python | ecma).values()}) == 2, (python, ecma)


def test_the_controller_does_not_take_the_newline_that_plain_python_re_takes():
    """jsonschema's own Draft 7 validator runs re.search, where $ also matches before a final newline;
    the controller's validator (and fastjsonschema) read $ as ECMA-262 does: the very end."""
    import jsonschema  # noqa: PLC0415

    schema = {"type": "string", "pattern": "^[0-9]{1,15}$"}
    assert jsonschema.Draft7Validator(schema).is_valid("2001\n")
    assert python_verdicts([schema["pattern"]], ["2001\n", "2001"]) == {
        "jsonschema (strict)": ["01"], "fastjsonschema": ["01"], "re.search, $ -> \\Z": ["01"]}
    assert ecma_verdicts([schema["pattern"]], ["2001\n", "2001"]) == {
        "ECMA-262 (node, u)": ["01"], "ECMA-262 (node)": ["01"], "regress": ["01"]}
