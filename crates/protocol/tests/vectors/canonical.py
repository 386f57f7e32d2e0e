#!/usr/bin/env python3
"""Canonical-JSON known-answer cases as a Python client produces them (stdlib only).

Regenerate everything (run inside crates/protocol/tests/vectors/):
    npm ci && node generate.mjs
generate.mjs runs this script and embeds its output in vectors.json; run alone it
prints {"python_version": ..., "canonical": [...]} as ASCII-only JSON on stdout.

Each case:
  body         json.dumps(obj)  -- what a Python client sends (unsorted, ", " / ": ", ASCII-escaped)
  utf8         json.dumps(obj, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
  ascii        json.dumps(obj, ensure_ascii=True,  sort_keys=True, separators=(",", ":"))
  *_sha256     lowercase hex SHA-256 of the UTF-8 bytes of that text
Python sorts keys by code point (JS sorts by UTF-16 code unit: see canonical_js).
"""
import hashlib
import json
import platform
import sys

CASES = [
    ("empty_object", {}),
    ("flat_sorted_keys", {"b": 1, "a": 2, "c": 3}),
    ("nested_sort_at_depth", {"z": {"y": 1, "x": {"b": [3, {"d": 1, "c": 2}], "a": None}}, "a": [{"k2": 1, "k1": 2}]}),
    ("empty_containers_and_string", {"arr": [], "obj": {}, "str": "", "nested": [[], {}, ""]}),
    ("booleans_null", {"t": True, "f": False, "n": None}),
    ("integers", {"zero": 0, "neg": -1, "big": 2 ** 70, "max_safe": 2 ** 53 - 1, "neg_big": -(2 ** 64)}),
    ("floats", {"one": 1.0, "neg_zero": -0.0, "tenth": 0.1, "e16": 1e16, "small": 1.5e-7, "pi": 3.141592653589793}),
    ("non_ascii_latin_cjk", {"name": "café", "city": "東京", "greek": "Ωμέγα"}),
    ("non_ascii_emoji_astral", {"emoji": "😀", "mixed": "a😀b𝄞c"}),
    ("line_separators_and_del", {"ls": "a\u2028b", "ps": "c\u2029d", "del": "x\u007fy", "nbsp": "\u00a0"}),
    ("control_chars", {"nl": "a\nb", "tab": "a\tb", "cr": "a\rb", "soh": "\u0001", "us": "\u001f", "bs": "\b\f"}),
    ("quotes_backslash_slash", {"q": 'say "hi"', "bs": "C:\\path\\to", "slash": "a/b</script>", "mix": '\\"'}),
    ("non_ascii_keys", {"é": 1, "e": 2, "z": 3, "東": 4}),
    ("astral_vs_high_bmp_keys", {"😀": "astral", "｡": "high-bmp", "a": "ascii"}),
    ("numeric_string_keys", {"10": "ten", "9": "nine", "a": "a", "-1": "neg"}),
    ("array_order_preserved", {"list": [3, 1, 2, "b", "a", {"y": 1, "x": 2}]}),
    ("tool_parameters", {"query": "weather in Zürich", "limit": 5, "options": {"units": "metric", "lang": "de"}}),
]


def sha256_hex(text):
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def case(name, obj):
    utf8 = json.dumps(obj, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    ascii_ = json.dumps(obj, ensure_ascii=True, sort_keys=True, separators=(",", ":"))
    return {
        "name": name,
        "body": json.dumps(obj),
        "utf8": utf8,
        "utf8_sha256": sha256_hex(utf8),
        "ascii": ascii_,
        "ascii_sha256": sha256_hex(ascii_),
    }


def main():
    out = {
        "python_version": platform.python_version(),
        "canonical": [case(name, obj) for name, obj in CASES],
    }
    sys.stdout.write(json.dumps(out, ensure_ascii=True, indent=2) + "\n")


if __name__ == "__main__":
    main()
