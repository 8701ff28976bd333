"""Shared fixtures: real models (via the models step), real faces (../shared/faces), a real
SQLite + sqlite-vec database and a private MQTT broker on a loopback port."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FACES = Path(os.environ.get("FACELINK_TEST_FACES", ROOT.parent / "shared" / "faces"))


def pytest_configure(config):
    # tests must not read the developer's own settings or data
    for key in [k for k in os.environ if k.startswith("FACELINK_") and k != "FACELINK_TEST_FACES"]:
        del os.environ[key]


@pytest.fixture(scope="session")
def faces_dir() -> Path:
    if not (FACES / "people").is_dir():
        pytest.skip(f"real face photos not found at {FACES} (CI has ../shared/faces)")
    return FACES


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """The models step itself (cached in the user's data dir: a no-op once built)."""
    from facelink.config import load_settings
    from facelink.models.provision import provision

    return provision(load_settings().models.models_dir).models_dir


@pytest.fixture(scope="session")
def model_settings(models_dir):
    from facelink.config import ModelSettings

    return ModelSettings(models_dir=models_dir, threads=2)


@pytest.fixture(scope="session")
def engine(model_settings):
    from facelink.models.engine import FaceEngine

    return FaceEngine.from_settings(model_settings)


@pytest.fixture()
def ctx(tmp_path, engine):
    from facelink.enroll.context import Context
    from facelink.enroll.store import Store

    store = Store(tmp_path / "facelink.db")
    yield Context(store, lambda: engine)
    store.close()


@pytest.fixture()
def gpio():
    """gpiozero on its mock pin factory (tests/gpio.py): the real gpiozero devices, no Pi."""
    from .gpio import mock_gpio

    with mock_gpio() as factory:
        yield factory


@pytest.fixture()
def broker(tmp_path):
    from broker import Broker

    b = Broker(tmp_path / "broker").start()
    yield b
    b.stop()


@pytest.fixture()
def logger_broker(tmp_path):
    """mosquitto as README configures the audit logger's broker (``max_queued_messages``
    1000000): a subscriber slower than a door's drain loses nothing at the broker."""
    from broker import Broker

    b = Broker(tmp_path / "broker", mosquitto_extra="max_queued_messages 1000000\n").start()
    yield b
    b.stop()


@pytest.fixture()
def make_settings(tmp_path, models_dir):
    """Settings for a test door: its own database, outbox and broker port."""
    from facelink.config import load_settings

    def make(**sections):
        s = load_settings()
        s.models.models_dir = models_dir
        s.models.threads = 2
        s.store.database = tmp_path / "facelink.db"
        s.mqtt.outbox = tmp_path / "outbox.db"
        s.mqtt.health_interval_s = 1.0
        for section, values in sections.items():
            for k, v in values.items():
                setattr(getattr(s, section), k, v)
        return s

    return make
