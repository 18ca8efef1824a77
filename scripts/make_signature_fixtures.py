#!/usr/bin/env python3
"""Generate crates/twilio/tests/fixtures/twilio_signatures.json with Twilio's own Python validator.

The Rust signer (src/twilio/signature.rs) is checked against these vectors so that it agrees with
an implementation we did not write. Run from anywhere:

    python3 -m pip install twilio
    python3 scripts/make_signature_fixtures.py

Parameters are listed in the order a form body would carry them (deliberately unsorted), so the
Rust side has to do the sorting itself. No case repeats an identical name=value pair: the Python
library drops such duplicates (it sorts set(values)), and whether Twilio's signer does is not
documented, so such a vector would pin down a guess.
"""

import argparse
import json
import pathlib
import sys
from urllib.parse import urlparse

OUT = pathlib.Path(__file__).resolve().parent.parent / "crates" / "twilio" / "tests" / "fixtures" / "twilio_signatures.json"


class MultiDict:
    """The smallest mapping the validator accepts that can carry a repeated parameter name."""

    def __init__(self, pairs):
        self.pairs = list(pairs)

    def __iter__(self):
        seen = []
        for name, _ in self.pairs:
            if name not in seen:
                seen.append(name)
        return iter(seen)

    def __len__(self):
        return len(self.pairs)

    def getall(self, name):
        return [v for n, v in self.pairs if n == name]


ACCOUNT = "AC" + "0123456789abcdef" * 2
CALL = "CA" + "fedcba9876543210" * 2

CASES = [
    {
        "name": "twilio_docs_worked_example",
        "auth_token": "12345",
        "url": "https://mycompany.com/myapp.php?foo=1&bar=2",
        "params": [
            ["CallSid", "CA1234567890ABCDE"],
            ["Caller", "+12349013030"],
            ["Digits", "1234"],
            ["From", "+12349013030"],
            ["To", "+18005551212"],
        ],
    },
    {
        "name": "voice_webhook_realistic",
        "auth_token": "9f86d081884c7d659a2feaa0c55ad015",
        "url": "https://calls.example.com/twilio/voice",
        "params": [
            ["Called", "+14155550100"],
            ["ToState", "CA"],
            ["CallerCountry", "US"],
            ["Direction", "inbound"],
            ["CallerState", "NY"],
            ["ToZip", "94105"],
            ["CallSid", CALL],
            ["To", "+14155550100"],
            ["CallerZip", "10001"],
            ["ToCountry", "US"],
            ["CallToken", "%7B%22parentCallInfoToken%22%3A%22eyJhbGciOiJFUzI1NiJ9%22%7D"],
            ["StirVerstat", "TN-Validation-Passed-A"],
            ["CalledZip", "94105"],
            ["ApiVersion", "2010-04-01"],
            ["CalledCity", "SAN FRANCISCO"],
            ["CallStatus", "ringing"],
            ["From", "+12125550123"],
            ["AccountSid", ACCOUNT],
            ["CalledCountry", "US"],
            ["CallerCity", "NEW YORK"],
            ["ToCity", "SAN FRANCISCO"],
            ["FromCountry", "US"],
            ["Caller", "+12125550123"],
            ["FromCity", "NEW YORK"],
            ["CalledState", "CA"],
            ["FromZip", "10001"],
            ["FromState", "NY"],
        ],
    },
    {
        "name": "status_callback_completed",
        "auth_token": "9f86d081884c7d659a2feaa0c55ad015",
        "url": "https://calls.example.com/twilio/status",
        "params": [
            ["CallSid", CALL],
            ["AccountSid", ACCOUNT],
            ["CallStatus", "completed"],
            ["CallDuration", "42"],
            ["Duration", "1"],
            ["Timestamp", "Thu, 01 Jan 2026 12:00:00 +0000"],
            ["SequenceNumber", "0"],
            ["CallbackSource", "call-progress-events"],
            ["Direction", "inbound"],
            ["From", "+12125550123"],
            ["To", "+14155550100"],
        ],
    },
    {
        "name": "websocket_handshake_no_params",
        "auth_token": "9f86d081884c7d659a2feaa0c55ad015",
        "url": "wss://calls.example.com/twilio/stream",
        "params": [],
    },
    {
        "name": "unicode_names_and_values",
        "auth_token": "tøkén-ünïcode",
        "url": "https://calls.example.com/twilio/voice",
        "params": [
            ["CallerName", "Zoë Ångström"],
            ["FromCity", "São Paulo"],
            ["Note", "電話 🚀"],
            # U+1F600 sorts after U+E000 by code point (and UTF-8 bytes), before it by UTF-16 units.
            ["\U0001F600", "astral"],
            ["\ue000", "private-use"],
            ["Ünïcode", "ÿ"],
        ],
    },
    {
        "name": "repeated_names_sorted_by_value",
        "auth_token": "secret",
        "url": "https://calls.example.com/twilio/voice",
        "params": [
            ["Tag", "beta"],
            ["CallSid", CALL],
            ["Tag", "alpha"],
            ["Tag", "Gamma"],
            ["Tag", ""],
        ],
    },
    {
        "name": "empty_values_and_empty_name",
        "auth_token": "secret",
        "url": "https://calls.example.com/twilio/voice",
        "params": [
            ["Digits", ""],
            ["CallSid", CALL],
            ["", "nameless"],
            ["SpeechResult", ""],
        ],
    },
    {
        "name": "case_and_prefix_ordering",
        "auth_token": "secret",
        "url": "https://calls.example.com/twilio/voice",
        "params": [
            ["a", "lower"],
            ["B", "upper"],
            ["FooBar", "2"],
            ["Foo", "1"],
            ["Foo_", "3"],
            ["AB", "x"],
            ["A", "y"],
        ],
    },
    {
        "name": "url_with_query_string_and_special_values",
        "auth_token": "secret",
        "url": "https://calls.example.com/twilio/voice?tenant=acme&region=eu%2Dwest&empty=",
        "params": [
            ["Body", "a&b=c+d %20 100%"],
            ["Multiline", "line one\nline two\r\n\ttabbed"],
            ["Quote", "\"<'>\\"],
        ],
    },
    {
        "name": "explicit_default_https_port",
        "auth_token": "secret",
        "url": "https://calls.example.com:443/twilio/voice",
        "params": [["CallSid", CALL], ["CallStatus", "ringing"]],
        "alternate_urls": ["https://calls.example.com/twilio/voice"],
    },
    {
        "name": "implicit_default_http_port",
        "auth_token": "secret",
        "url": "http://calls.example.com/twilio/voice?x=1",
        "params": [["CallSid", CALL]],
        "alternate_urls": ["http://calls.example.com:80/twilio/voice?x=1"],
    },
    {
        "name": "non_default_port",
        "auth_token": "secret",
        "url": "http://127.0.0.1:8080/twilio/voice",
        "params": [["CallSid", CALL], ["From", "client:alice"]],
    },
]


def main():
    out = []
    for case in CASES:
        pairs = [tuple(p) for p in case["params"]]
        assert len(set(pairs)) == len(pairs), f"{case['name']}: identical name=value pairs"
        validator = RequestValidator(case["auth_token"])
        params = MultiDict(pairs)
        signature = validator.compute_signature(case["url"], params)
        assert validator.validate(case["url"], params, signature), case["name"]
        entry = {
            "name": case["name"],
            "auth_token": case["auth_token"],
            "url": case["url"],
            "params": case["params"],
            "signature": signature,
        }
        alternates = case.get("alternate_urls", [])
        for alt in alternates:
            # Only http(s): the Python library adds port 80 to a wss:// URL, which no client uses.
            assert urlparse(alt).scheme in ("http", "https"), alt
            assert validator.validate(alt, params, signature), (case["name"], alt)
        if alternates:
            entry["also_valid_for"] = alternates
        out.append(entry)

    doc = {
        "generator": "scripts/make_signature_fixtures.py",
        "validator": f"twilio-python {twilio.__version__} twilio.request_validator.RequestValidator",
        "cases": out,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {len(out)} cases to {OUT}", file=sys.stderr)


if __name__ == "__main__":
    argparse.ArgumentParser(
        prog="scripts/make_signature_fixtures.py",
        description=f"Writes {OUT.relative_to(OUT.parents[4])} with Twilio's own Python validator "
        "(python3 -m pip install twilio). Takes no argument.",
    ).parse_args()
    # Imported after the arguments, so --help works without the twilio package.
    import twilio
    from twilio.request_validator import RequestValidator

    main()
