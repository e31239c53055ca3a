"""gnj.settings: the GNJ_* switches, their defaults, their checks, and who reads them."""

import re
import subprocess
from pathlib import Path

import pytest

from gnj import settings
from gnj.nn import cpp_build, impl_switch

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_apply_when_unset_or_empty():
    for env, setting in settings.SETTINGS.items():
        assert settings.get(env, {}) == setting.default
        assert settings.get(env, {env: ""}) == setting.default


@pytest.mark.parametrize("env, value", [("GNJ_CONV_IMPL", "xla"), ("GNJ_CONV_IMPL", "onednn"),
                                        ("GNJ_XLA_DEFAULTS", "0"), ("GNJ_ALLOCATOR", "system"),
                                        ("GNJ_CXX", "clang++"), ("GNJ_KERNEL_CACHE", "/tmp/k")])
def test_valid_values_are_returned(env, value):
    assert settings.get(env, {env: value}) == value


@pytest.mark.parametrize("env, value", [("GNJ_CONV_IMPL", "mkl"), ("GNJ_XLA_DEFAULTS", "yes"),
                                        ("GNJ_ALLOCATOR", "tcmalloc")])
def test_invalid_value_names_variable_value_and_valid_values(env, value):
    valid = ", ".join(settings.SETTINGS[env].choices)
    with pytest.raises(ValueError, match=re.escape(f"{env}={value!r}") + ".*valid: "
                       + re.escape(valid)):
        settings.get(env, {env: value})


def test_unknown_setting_is_a_key_error_listing_the_settings():
    with pytest.raises(KeyError, match="GNJ_CONV_IMPL"):
        settings.get("GNJ_NOPE")


def test_the_process_environment_is_read(monkeypatch):
    monkeypatch.setenv("GNJ_CXX", "my-c++")
    monkeypatch.setenv("GNJ_KERNEL_CACHE", "/tmp/gnj-cache")
    assert cpp_build.compiler() == "my-c++"
    assert cpp_build.cache_dir() == Path("/tmp/gnj-cache")


def test_declare_adds_a_switch_once():
    setting = settings.Setting("GNJ_TEST_ONLY_SWITCH", "a", ("a", "b"), "test switch")
    try:
        assert settings.declare(setting) is setting
        settings.declare(setting)  # the same definition again is fine
        with pytest.raises(ValueError, match="defined differently"):
            settings.declare(settings.Setting("GNJ_TEST_ONLY_SWITCH", "b", ("a", "b")))
        switch = impl_switch.ImplSwitch("test op", "GNJ_TEST_ONLY_SWITCH", ("a", "b"))
        assert switch.requested() == "a"
        with switch.use("b"):
            assert switch.requested() == "b"
        with pytest.raises(ValueError, match="test op 'c'; valid: a, b"):
            with switch.use("c"):
                pass
        with pytest.raises(ValueError, match="disagree"):
            impl_switch.ImplSwitch("test op", "GNJ_TEST_ONLY_SWITCH", ("a",))
    finally:
        settings.SETTINGS.pop("GNJ_TEST_ONLY_SWITCH", None)


def test_no_module_but_settings_reads_a_gnj_variable():
    proc = subprocess.run(["grep", "-rnE", r"environ.*GNJ_|getenv\(.GNJ_", "gnj",
                           "--include=*.py"], cwd=ROOT, capture_output=True, text=True)
    hits = [line for line in proc.stdout.splitlines() if not line.startswith("gnj/settings.py")]
    assert hits == []
