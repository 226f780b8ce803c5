"""The resource limits: defaults, environment overrides and the message a refused input gets."""
import pytest

from crema import limits
from crema.errors import CremaError


def test_default_applies_and_amount_over_it_is_refused_naming_the_setting(monkeypatch):
    monkeypatch.delenv(limits.UPLOAD_BYTES.env, raising=False)
    limits.UPLOAD_BYTES.check(limits.UPLOAD_BYTES.default, "ok.npy")
    with pytest.raises(limits.LimitError) as err:
        limits.UPLOAD_BYTES.check(limits.UPLOAD_BYTES.default + 1, "big.npy")
    message = str(err.value)
    assert message.startswith("big.npy: ") and limits.UPLOAD_BYTES.env in message and "upload size" in message


def test_environment_override_and_bad_values(monkeypatch):
    monkeypatch.setenv(limits.RECORD_BYTES.env, "1000")
    assert limits.RECORD_BYTES.value() == 1000
    with pytest.raises(limits.LimitError):
        limits.RECORD_BYTES.check(1001, "x")
    for bad in ("ten", "0", "-5"):
        monkeypatch.setenv(limits.RECORD_BYTES.env, bad)
        with pytest.raises(CremaError, match=limits.RECORD_BYTES.env):
            limits.RECORD_BYTES.value()


def test_every_limit_has_its_own_setting():
    assert len({limit.env for limit in limits.ALL}) == len(limits.ALL)
