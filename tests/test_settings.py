"""Settings: defaults, file, environment; one clear error naming the key."""

from __future__ import annotations

import pytest

from facelink.config import load_settings
from facelink.errors import ConfigError


def test_precedence(tmp_path, monkeypatch):
    cfg = tmp_path / "door.toml"
    cfg.write_text('[mqtt]\ndevice_id = "front-door"\nport = 1884\n[matching]\nsimilarity_threshold = 99.5\n')
    s = load_settings(cfg)
    assert (s.mqtt.device_id, s.mqtt.port, s.matching.similarity_threshold) == ("front-door", 1884, 99.5)
    assert s.matching.frames_required == 3  # default kept
    monkeypatch.setenv("FACELINK_MQTT__PORT", "1999")
    assert load_settings(cfg).mqtt.port == 1999  # environment beats the file


@pytest.mark.parametrize("text,key", [
    ("[matching]\nsimilarity_threshold = 140\n", "matching.similarity_threshold"),
    ("[mqtt]\nport = \"eighty\"\n", "mqtt.port"),
    ("[models]\ndetector_backend = \"magic\"\n", "models.detector_backend"),
    ("[camera]\nunknown_key = 1\n", "camera.unknown_key"),
    # no setting means "forever": a revocation that never reloads, a track that never ends
    ("[matching]\nreload_interval_s = inf\n", "matching.reload_interval_s"),
    ("[matching]\nreload_interval_s = 1e300\n", "matching.reload_interval_s"),
    ("[matching]\ntrack_max_age_s = inf\n", "matching.track_max_age_s"),
    ("[camera]\nmax_fps = 1e-300\n", "camera.max_fps"),
    ("[mqtt]\nhealth_interval_s = inf\n", "mqtt.health_interval_s"),
    ("[door]\npulse_s = nan\n", "door.pulse_s"),
    ("[osdp]\ndebounce_s = inf\n", "osdp.debounce_s"),
    ("[wiegand]\npulse_interval_us = 20000\n", "wiegand.pulse_interval_us"),  # no margin under 20 ms
    ("[credentials]\nevdev_format = \"h10301\"\n", "credentials.evdev_format"),
    # paho packs it in 16 bits: more killed its network thread (a traceback), the door never connected
    ("[mqtt]\nkeepalive_s = 65536\n", "mqtt.keepalive_s"),
    ("[mqtt]\nhost = \"\"\n", "mqtt.host"),  # paho: ValueError, a traceback and exit 1 (restarted)
])
def test_invalid_settings_name_the_key(tmp_path, text, key):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_settings(cfg)


def test_the_panel_debounce_may_be_longer_than_the_cooldown_only_where_it_does_not_apply(tmp_path):
    """card_and_face decides on each badge tap (no cooldown): a tap within osdp.debounce_s is
    ACTUATION_FAILED with its reason. Without a panel the debounce is not used."""
    cfg = tmp_path / "door.toml"
    cfg.write_text('[door]\noutput = "osdp"\n[osdp]\ndebounce_s = 20\n[matching]\nmode = "card_and_face"\n')
    assert load_settings(cfg).osdp.debounce_s == 20
    cfg.write_text('[osdp]\ndebounce_s = 20\n')
    assert load_settings(cfg).osdp.debounce_s == 20
    cfg.write_text('[door]\noutput = "osdp"\n[osdp]\ndebounce_s = 10\n[matching]\ncooldown_s = 10\n')
    assert load_settings(cfg).osdp.debounce_s == 10  # equal: a user granted again is sent again


def test_unreadable_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[mqtt\nport=")
    with pytest.raises(ConfigError):
        load_settings(broken)


def test_secrets_are_not_printed(monkeypatch):
    monkeypatch.setenv("FACELINK_MQTT__USERNAME", "door-1")
    monkeypatch.setenv("FACELINK_MQTT__PASSWORD", "hunter2")
    s = load_settings()
    assert "hunter2" not in repr(s) and s.mqtt.password.get_secret_value() == "hunter2"


def test_readme_reference_is_current():
    from pathlib import Path

    from config_reference import reference

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert reference() in readme, "run: python tools/config_reference.py --write README.md"


@pytest.mark.parametrize("text,key", [
    ('[mqtt]\npassword = "x"\n', "mqtt.username"),
    ('[door]\nrelay = "command"\n', "door.command"),
    ('[mqtt]\ntls_ca = "/nonexistent/ca.crt"\n', "mqtt.tls_ca"),
    # a door following one collection and matching another never hears of a revocation
    ('[sync]\ncollection_id = "staff"\n', "sync.collection_id"),
    # asked from half of it on: a few seconds would be a challenge per heartbeat
    ('[sync]\nchallenge_every_s = 30\n', "sync.challenge_every_s"),
    # a user granted again after the cooldown would not reach the panel: the door stays shut
    ('[door]\noutput = "osdp"\n[osdp]\ndebounce_s = 20\n', "osdp.debounce_s"),
    ('[door]\noutput = "osdp"\n[matching]\ncooldown_s = 0\nmode = "card_or_face"\n', "osdp.debounce_s"),
])
def test_cross_field_mistakes_name_the_key(tmp_path, text, key):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=r"invalid setting " + key.replace(".", r"\.") + ": "):
        load_settings(cfg)


@pytest.mark.parametrize("text,key", [
    ('[matching]\ncollection_id = "front door"\n', "matching.collection_id"),
    ('[sync]\ncollection_id = "staff/*"\n', "sync.collection_id"),
    ('[fleet]\npublish = ["staff", "a+b"]\n', "fleet.publish.1"),
])
def test_a_collection_id_outside_the_api_s_pattern_is_refused(tmp_path, text, key):
    """One pattern for a CollectionId (enroll/validate.py), in the API and in the configuration: a
    door matching a collection the API could never have created ran with an empty gallery."""
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=r"invalid setting " + key.replace(".", r"\.") + ": "):
        load_settings(cfg)


@pytest.mark.parametrize("name", ["FACELINK_LIVENESS_REQUIRE_BLINK",  # one underscore where two belong
                                  "FACELINK_LIVENES__REQUIRE_BLINK",  # a section misspelt
                                  "facelink_sync_on_stale"])  # pydantic-settings reads names in any case
def test_a_misspelt_environment_variable_is_refused_naming_it(monkeypatch, name):
    """README: unknown keys are refused. A systemd drop-in's Environment=FACELINK_LIVENESS_REQUIRE_BLINK=true
    was silently passed over: the door ran without the blink check its operator turned on."""
    monkeypatch.setenv(name, "true")
    with pytest.raises(ConfigError, match=name):
        load_settings()


def test_other_facelink_variables_are_not_settings(monkeypatch):
    for name in ("FACELINK_CONFIG_UNUSED_BY_TOOLS", "FACELINK_TEST_FACES", "FACELINK_USER_ID", "FACELINK_ARM64_ROOT"):
        monkeypatch.setenv(name, "x")
    monkeypatch.setenv("FACELINK_LIVENESS__REQUIRE_BLINK", "true")
    assert load_settings().liveness.require_blink is True


def test_a_tls_file_given_under_home_is_the_file_the_mqtt_client_opens(tmp_path, monkeypatch):
    """`~/…` TLS paths: the settings check expanded `~` and passed, then the MQTT client looked
    for the literal `~/…` and refused to start (ConfigError). Both now use the expanded path."""
    from facelink.mqtt.client import MqttClient

    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "ca.crt").write_text("not a certificate")
    monkeypatch.setenv("FACELINK_MQTT__TLS_CA", "~/ca.crt")
    settings = load_settings()
    assert settings.mqtt.tls_ca == tmp_path / "ca.crt"
    with pytest.raises(ConfigError, match="cannot use the TLS files"):  # opened (and refused as no certificate)
        MqttClient(settings.mqtt, client_id="tls-home")


@pytest.mark.parametrize("text,expected", [
    ("", 3_600.0),  # the default
    ("[sync]\nmax_staleness_s = 14400\n", 14_400.0),  # a site that rides out a 4-hour desk outage
    ("[sync]\nmax_staleness_s = 14400\nchallenge_every_s = 3600\n", 3_600.0),  # chosen: kept
    ("[sync]\nmax_staleness_s = 900\n", 3_600.0),
])
def test_the_default_challenge_period_never_cuts_a_longer_max_staleness(tmp_path, text, expected):
    """sync.challenge_every_s left at its default is at least sync.max_staleness_s (found in
    review: on by default at 3600 s, it made a door that was set to ride out hours without the desk
    stale 30-60 min into the outage, with on_stale = deny the whole site locked, after an upgrade
    that changed nothing in its configuration). Set explicitly, it is kept."""
    cfg = tmp_path / "site.toml"
    cfg.write_text(text)
    assert load_settings(cfg).sync.challenge_every_s == expected


def test_the_default_challenge_period_follows_max_staleness_from_the_environment(monkeypatch):
    monkeypatch.setenv("FACELINK_SYNC__MAX_STALENESS_S", "7200")
    assert load_settings().sync.challenge_every_s == 7_200.0
    monkeypatch.setenv("FACELINK_SYNC__CHALLENGE_EVERY_S", "3600")
    assert load_settings().sync.challenge_every_s == 3_600.0
