"""The OSDP reader's key stages (``access/osdp_provisioning.py``), without libosdp."""

import pytest

from access.osdp_provisioning import Provisioning, Stage

KEY = bytes(range(16))


def test_a_key_file_at_start_is_enforced_and_a_panels_key_change_needs_no_restart():
    prov = Provisioning.at_start(KEY)
    assert prov.enforced and prov.fault is None
    assert not prov.key_written(bytes(16 * [7]))  # libosdp changes its own key when enforcing
    assert prov.stage is Stage.ENFORCED and prov.panel_key is None
    prov.key_refused("all zeros")  # a key change refused: the reader runs on its key, no fault
    assert prov.enforced and prov.fault is None and prov.key_error == "all zeros"


def test_install_mode_waits_for_the_key_then_for_the_restart():
    prov = Provisioning.at_start(None)
    assert prov.stage is Stage.INSTALLING and not prov.enforced
    prov.key_refused("the install key")
    assert prov.stage is Stage.INSTALLING and prov.fault == "the install key"
    assert prov.key_written(KEY)
    assert (prov.stage, prov.panel_key, prov.fault, prov.enforced) == (Stage.KEY_SAVED, KEY, None, False)
    prov.restarted()
    assert prov.enforced and prov.fault is None and prov.panel_key is None


def test_a_failed_restart_backs_off_stays_down_and_clears_when_it_works():
    prov = Provisioning.at_start(None, (1.0, 5.0, 30.0))
    prov.key_written(KEY)
    assert not prov.retry_due(1e9)  # the first restart is asked for at once, not scheduled
    times = [prov.restart_failed("boom", now) - now for now in (100.0, 200.0, 300.0, 400.0)]
    assert times == [1.0, 5.0, 30.0, 30.0]
    assert not prov.enforced and "4 attempt(s)" in prov.fault and "boom" in prov.fault
    assert not prov.retry_due(429.9) and prov.retry_due(430.0)
    prov.restarted()
    assert prov.enforced and prov.fault is None and not prov.retry_due(1e9)


@pytest.mark.parametrize("delays", [(), (0.0,), (1.0, -1.0)])
def test_a_back_off_without_positive_delays_is_refused(delays):
    with pytest.raises(ValueError):
        Provisioning.at_start(None, delays)


def test_a_closing_reader_tries_no_restart_again():
    prov = Provisioning.at_start(None, (1.0,))
    prov.key_written(KEY)
    prov.restart_failed("boom", 100.0)
    assert prov.retry_due(101.0)
    prov.stop_retrying()
    assert not prov.retry_due(1e9) and prov.retry_at is None and not prov.enforced
