import functools

import pytest

from gnj.registry import NORMS, Registry, parse_spec


def test_parse_spec_literals():
    assert parse_spec("group") == ("group", {})
    assert parse_spec(" group(groups=8, unbiased=True, name='x', t=(1, 2)) ") == (
        "group", {"groups": 8, "unbiased": True, "name": "x", "t": (1, 2)})


@pytest.mark.parametrize("bad", ["", "group(8)", "group(g=os.system('x'))", "a.b(c=1)", "1+2",
                                 "group(**k)"])
def test_parse_spec_rejects(bad):
    with pytest.raises(ValueError):
        parse_spec(bad)


def test_lookup_returns_partial_with_spec_over_defaults():
    reg = Registry("thing")

    @reg.register("f", "alias")
    def f(a=1, b=2):
        return a, b

    p = reg.lookup("f(b=5)", a=3, b=4)
    assert isinstance(p, functools.partial)
    assert p() == (3, 5)
    assert reg.lookup("alias")() == (1, 2)
    assert reg.names() == ["alias", "f"]


def test_unknown_name_lists_valid_ones():
    with pytest.raises(ValueError, match=r"unknown norm 'nope'.*batch"):
        NORMS.lookup("nope")


def test_duplicate_registration_rejected():
    reg = Registry("thing")
    reg.register("x")(lambda: 1)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("x")(lambda: 2)
