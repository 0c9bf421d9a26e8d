"""A user's pytest suite against settingsd as a Twilio emulator: the
README's "Using settingsd in your test suite" example, run for real by
tests/api/emulator.rs.

Environment: SETTINGSD (the settingsd binary), SETTINGSD_GRPC_ADDR (its
gRPC address, for `settingsd admin`), SETTINGSD_HTTP_URL (its HTTP bridge).
"""
import json
import os
import subprocess

import pytest
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

ACCOUNT = "AC" + "7" * 32


def admin(*args):
    """Runs `settingsd admin ...` against the server under test."""
    return subprocess.run(
        [os.environ["SETTINGSD"], "admin", "--grpc-addr", os.environ["SETTINGSD_GRPC_ADDR"], *args],
        check=True, capture_output=True, text=True,
    ).stdout


@pytest.fixture(autouse=True)
def clean_emulator():
    """Every test starts from defaults and without fault rules."""
    admin("reset", "--all")
    admin("clear-faults")
    yield


@pytest.fixture
def twilio():
    client = Client(ACCOUNT, "any-token")
    client.video.base_url = os.environ["SETTINGSD_HTTP_URL"]
    return client


def test_settings_start_at_defaults_after_a_reset(twilio):
    settings = twilio.video.v1.recording_settings().fetch()
    assert settings.friendly_name is None
    assert settings.aws_storage_enabled is False


def test_a_write_is_read_back(twilio):
    twilio.video.v1.recording_settings().create(friendly_name="from test two")
    assert twilio.video.v1.recording_settings().fetch().friendly_name == "from test two"


def test_the_previous_test_left_nothing_behind(twilio):
    assert twilio.video.v1.recording_settings().fetch().friendly_name is None


def test_an_injected_503_reaches_the_client_then_clearing_it_succeeds(twilio):
    admin("inject-fault", "--resource", "recording", "--method", "set", "--count", "1", "--code", "14")
    with pytest.raises(TwilioRestException) as failure:
        twilio.video.v1.recording_settings().create(friendly_name="refused")
    assert failure.value.status == 503
    assert failure.value.code == 20503
    admin("clear-faults")
    twilio.video.v1.recording_settings().create(friendly_name="accepted")
    assert twilio.video.v1.recording_settings().fetch().friendly_name == "accepted"


def test_the_request_log_shows_what_the_code_sent(twilio):
    twilio.video.v1.recording_settings().create(friendly_name="logged", aws_storage_enabled=False)
    latest = json.loads(admin("requests", "--account", ACCOUNT, "--limit", "1").splitlines()[0])
    assert latest["method"] == "POST /v1/RecordingSettings/Default"
    assert latest["status"] == "200"
    assert latest["parameters"] == [["FriendlyName", "logged"], ["AwsStorageEnabled", "false"]]
