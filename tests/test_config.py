"""Config: defaults, files, overrides, validation messages, TOML round trip, generated docs."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from diffnas.runs.config import (
    Config,
    ConfigError,
    RegistryChoices,
    config_from_dict,
    config_to_dict,
    config_to_toml,
    describe_config,
    load_config,
    parse_override,
    save_config,
)

CONFIG_MD = Path(__file__).resolve().parents[1] / "docs" / "CONFIG.md"


def test_defaults():
    cfg = load_config()
    assert cfg == Config()
    assert cfg.search.epochs == 50
    assert cfg.search.alpha_betas == [0.5, 0.999]
    assert cfg.data.dataset == "fashion_mnist"
    assert cfg.space.name == "nb201"
    assert cfg.run.progress is True


def test_every_key_is_documented():
    for section in dataclasses.fields(Config):
        for f in dataclasses.fields(section.default_factory()):
            assert f.metadata.get("doc"), f"{section.name}.{f.name} has no doc"


def test_file_then_overrides_in_order(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[search]\nepochs = 10\nw_lr = 1\n\n[run]\nseed = 3\n")
    cfg = load_config(
        path,
        [
            "search.epochs=20",
            "search.epochs=30",
            "run.out=foo/bar",
            "search.alpha_betas=[0.5,0.9]",
            "run.progress=false",
            "data.dataset = cifar10",
        ],
    )
    assert cfg.search.epochs == 30
    assert cfg.search.w_lr == 1.0 and isinstance(cfg.search.w_lr, float)
    assert cfg.run.seed == 3
    assert cfg.run.out == "foo/bar"
    assert cfg.search.alpha_betas == [0.5, 0.9]
    assert cfg.run.progress is False
    assert cfg.data.dataset == "cifar10"
    assert cfg.space == Config().space


def test_override_values():
    assert parse_override("search.epochs=10") == ("search", "epochs", 10)
    assert parse_override("run.out=runs/x=1") == ("run", "out", "runs/x=1")
    assert parse_override('run.out="a b"') == ("run", "out", "a b")
    assert parse_override("run.out=") == ("run", "out", "")
    # A str key given something that reads as another TOML type keeps the text.
    assert load_config(overrides=["run.out=2024"]).run.out == "2024"
    assert load_config(overrides=["run.out=2024-01-01"]).run.out == "2024-01-01"


# (overrides, substrings the message must contain: the key, the value, what is allowed)
BAD = [
    (["serch.epochs=1"], ["[serch]", "did you mean search", "run, data, space, search"]),
    (["search.epoch=1"], ["search.epoch", "did you mean search.epochs", "w_lr_min"]),
    (["search.seed=1"], ["search.seed", "did you mean run.seed"]),
    (["search.epochs=ten"], ["search.epochs", "'ten'", "an integer >= 1"]),
    (["search.epochs=1.5"], ["search.epochs", "1.5", "an integer >= 1"]),
    (["search.epochs=true"], ["search.epochs", "True", "an integer"]),
    (["run.progress=1"], ["run.progress", "1", "true or false"]),
    (["search.w_lr=true"], ["search.w_lr", "True", "a number >= 0"]),
    (["search.w_lr=nan"], ["search.w_lr", "nan", "a number >= 0"]),
    (["search.epochs=0"], ["search.epochs", "0", ">= 1"]),
    (["data.train_portion=1.0"], ["data.train_portion", "1.0", "in [0.01, 0.99]"]),
    (["search.w_momentum=-0.1"], ["search.w_momentum", "-0.1", "in [0, 1]"]),
    (["run.device=tpu"], ["run.device", "'tpu'", "'auto', 'cpu', 'cuda'"]),
    (["run.device=cdua"], ["run.device", "did you mean 'cuda'"]),
    (["search.order=3"], ["search.order", "3", "one of 1, 2"]),
    (["data.dataset=nope"], ["data.dataset", "'nope'", "'fashion_mnist'"]),
    (["search.alpha_betas=[0.5]"], ["search.alpha_betas", "[0.5]", "a list of 2 numbers"]),
    (["search.alpha_betas=[0.5,1.0]"], ["search.alpha_betas", "item 1", "in [0, 1)"]),
    (["search.alpha_betas=[0.5,'x']"], ["search.alpha_betas", "'x'", "a list of 2 numbers"]),
    (["search.alpha_betas=0.5"], ["search.alpha_betas", "0.5", "a list of 2 numbers"]),
    (["search.epochs"], ["'search.epochs'", "section.key=value"]),
    (["epochs=3"], ["'epochs=3'", "section.key=value"]),
    (["a.b.c=3"], ["'a.b.c=3'", "section.key=value"]),
    (["=3"], ["section.key=value"]),
]


@pytest.mark.parametrize("overrides,expected", BAD, ids=[b[0][0] for b in BAD])
def test_bad_overrides(overrides, expected):
    with pytest.raises(ConfigError) as info:
        load_config(overrides=overrides)
    message = str(info.value)
    for text in expected:
        assert text in message, f"{text!r} not in {message!r}"
    if "=" in overrides[0] and "." in overrides[0].split("=")[0]:
        assert "--set" in message  # says where the bad value came from


def test_bad_file_key_names_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[search]\nepochs = 10\nlearning_rate = 0.1\n")
    with pytest.raises(ConfigError, match="search.learning_rate") as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert "the keys of [search] are: strategy, order, epochs" in str(info.value)


def test_bad_toml_syntax(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("[search]\nepochs = 10\nw_lr = \n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message and "line 3" in message


def test_section_must_be_table(tmp_path):
    path = tmp_path / "flat.toml"
    path.write_text("search = 3\n")
    with pytest.raises(ConfigError, match=r"\[search\].*table"):
        load_config(path)
    path.write_text("seed = 3\n")
    with pytest.raises(ConfigError, match="did you mean run.seed"):
        load_config(path)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")


def test_dict_round_trip_validates():
    cfg = load_config(overrides=["search.epochs=7"])
    assert config_from_dict(config_to_dict(cfg)) == cfg
    assert config_from_dict({"search": {"epochs": 7}}) == cfg
    with pytest.raises(ConfigError, match="search.epochs"):
        config_from_dict({"search": {"epochs": -1}})


def test_save_load_round_trip(tmp_path):
    cfg = load_config(
        overrides=[
            "search.w_lr=0.1",
            "search.alpha_lr=1e-7",
            "search.unrolled_eps=0.30000000000000004",
            "search.alpha_betas=[0.0,0.123456789012345678]",
            "search.grad_clip=1.7976931348623157e308",
            "run.seed=4294967295",
            "data.augment=false",
        ]
    )
    cfg.run.out = 'runs/a "quoted" \\ path\n\ttab \x7f \x01 é ✓'
    path = tmp_path / "saved.toml"
    save_config(cfg, path)
    tomllib.loads(path.read_text())  # valid TOML on its own
    back = load_config(path)
    assert back == cfg
    assert config_to_toml(back) == config_to_toml(cfg)


def test_registry_choices_fail_soft_only_when_missing(tmp_path, monkeypatch):
    assert RegistryChoices("diffnas._no_such_module", "X", ("a",))() == ("a",)
    assert RegistryChoices("diffnas.registry", "NO_SUCH_REGISTRY", ("b",))() == ("b",)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "diffnas_broken_dep_mod.py").write_text("import diffnas_surely_missing_dep\n")
    with pytest.raises(ImportError, match="diffnas_surely_missing_dep"):
        RegistryChoices("diffnas_broken_dep_mod", "X", ("c",))()
    (tmp_path / "diffnas_raising_mod.py").write_text("raise RuntimeError('boom')\n")
    with pytest.raises(RuntimeError, match="boom"):
        RegistryChoices("diffnas_raising_mod", "X", ("c",))()


def test_config_md_is_up_to_date():
    expected = describe_config()
    actual = CONFIG_MD.read_text(encoding="utf-8") if CONFIG_MD.exists() else ""
    assert actual == expected, (
        "docs/CONFIG.md is out of date with the config schema; regenerate it with "
        "`python -m diffnas.runs.config > docs/CONFIG.md`"
    )


def test_registry_suggests_the_name_meant():
    from diffnas.registry import Registry

    r = Registry("thing")
    for name in ("DARTS_V2", "darts_cnn", "nb201"):
        r.add(name, object())
    assert r.lookup("darts_v2") == "DARTS_V2" and r.lookup("nope") is None
    with pytest.raises(KeyError, match="did you mean 'nb201'"):
        r.get("nb210")
    with pytest.raises(KeyError, match="did you mean 'DARTS_V2'"):
        r.get("darts_V2")
    assert "did you mean" not in r.unknown("zzzzzz")


@pytest.mark.parametrize("text", ["inf", "-inf", "nan", "+inf"])
def test_non_finite_numbers_are_refused(text):
    with pytest.raises(ConfigError, match=r"search.alpha_lr = .*not a finite number"):
        load_config(overrides=[f"search.alpha_lr={text}"])
