"""Drives the official twilio-python library against settingsd's HTTP bridge.

Run by tests/api/twilio_libraries.rs with the venv's python (scripts/test
installs twilio there). Prints one JSON object: what each call returned or
raised, for the Rust test to check.

usage: twilio_python.py BASE_URL ACCOUNT_SID AUTH_TOKEN API_KEY_SID API_KEY_SECRET RESOURCE

RESOURCE is the library's name for the resource: recording_settings
(client.video.v1.recording_settings()) or composition_settings.
"""

import json
import sys

from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

FIELDS = (
    "account_sid",
    "friendly_name",
    "aws_credentials_sid",
    "aws_s3_url",
    "aws_storage_enabled",
    "encryption_key_sid",
    "encryption_enabled",
    "url",
)


def client(base_url, username, password, account_sid=None):
    c = Client(username, password, account_sid)
    c.video.base_url = base_url
    return c


def resource(instance):
    return {name: getattr(instance, name) for name in FIELDS}


def attempt(call):
    try:
        return {"ok": resource(call())}
    except TwilioRestException as e:
        return {"status": e.status, "code": e.code, "message": e.msg}


def main():
    base_url, account, token, key, secret, name = sys.argv[1:7]

    def settings(c):
        return getattr(c.video.v1, name)()

    by_token = settings(client(base_url, account, token))
    by_key = settings(client(base_url, key, secret, account))
    wrong = settings(client(base_url, account, "wrong-token"))

    results = {
        "fetch_default": attempt(by_token.fetch),
        "create": attempt(
            lambda: by_token.create(
                friendly_name="My Settings",
                aws_s3_url="https://b.s3.amazonaws.com/p/",
                aws_credentials_sid="CR" + "a" * 32,
                aws_storage_enabled=True,
                encryption_enabled=False,
            )
        ),
        "fetch_by_key": attempt(by_key.fetch),
        "create_by_key": attempt(lambda: by_key.create(friendly_name="Set By Key")),
        "missing_friendly_name": attempt(lambda: by_token.create(friendly_name="")),
        "invalid_url": attempt(
            lambda: by_token.create(friendly_name="x", aws_s3_url="http://not-https/")
        ),
        "wrong_token": attempt(wrong.fetch),
        "fetch_after": attempt(by_token.fetch),
    }
    print(json.dumps(results))


if __name__ == "__main__":
    main()
