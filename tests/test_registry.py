import pytest

from hf_icl.errors import HfIclError
from hf_icl.registry import Registry


def test_lookup_and_did_you_mean():
    reg: Registry[int] = Registry("widget")
    reg.register("logistic")(1)
    reg.register("majority")(2)
    assert reg.get("logistic") == 1 and reg.names() == ["logistic", "majority"]
    with pytest.raises(
        HfIclError,
        match=r"unknown widget 'logistc' \(did you mean 'logistic'\?\); allowed: logistic, majority",
    ):
        reg.get("logistc")
    with pytest.raises(ValueError, match="already registered"):
        reg.register("logistic")(3)
