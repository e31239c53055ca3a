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

    @reg.register("f")
    def f(a=1, b=2):
        return a, b

    reg.alias({"alias": "f"})

    p = reg.lookup("f(b=5)", a=3, b=4)
    assert isinstance(p, functools.partial)
    assert p() == (3, 5)
    assert reg.lookup("alias")() == (1, 2)
    assert reg.names() == ["f"]
    assert reg.aliases() == {"alias": "f"}


def test_unknown_name_lists_valid_ones():
    with pytest.raises(ValueError, match=r"unknown norm 'nope'.*batch.*aliases: .*bn=batch"):
        NORMS.lookup("nope")


def test_alias_table_resolves_to_the_canonical_entry():
    reg = Registry("thing")
    reg.alias({"a": "f", "b": "f"})  # may come before the entry is registered

    @reg.register("f")
    def f():
        return 1

    assert reg.get("a") is f and reg.get("b") is f and "a" in reg
    assert reg.canonical("a") == "f" and reg.canonical("f") == "f"
    assert reg.names() == ["f"] and len(reg) == 1
    reg.alias({"a": "f"})  # the same entry again is harmless


@pytest.mark.parametrize("table", [{"f": "g"}, {"a": "g"}, {"c": "a"}])
def test_alias_cannot_shadow_or_chain(table):
    reg = Registry("thing")
    reg.register("f")(lambda: 1)
    reg.register("g")(lambda: 2)
    reg.alias({"a": "f"})
    with pytest.raises(ValueError, match="alias"):
        reg.alias(table)


def test_register_rejects_a_name_taken_by_an_alias():
    reg = Registry("thing")
    reg.alias({"a": "f"})
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a")(lambda: 1)


def test_norm_names_mean_one_thing():
    assert "plain" not in NORMS and NORMS.get("none") is NORMS.get("identity")
    from gnj.registry import ACTIVATIONS, CONVS, INITS

    assert "plain" in CONVS
    for registry in (NORMS, CONVS, INITS, ACTIVATIONS):
        for alias, target in registry.aliases().items():
            assert target in registry.names() and alias not in registry.names(), alias


def test_duplicate_registration_rejected():
    reg = Registry("thing")
    reg.register("x")(lambda: 1)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("x")(lambda: 2)
