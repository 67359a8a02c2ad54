"""Config loading: flag > env > file > default, file formats and search, value forms, warnings."""

from __future__ import annotations

import json
import logging
from dataclasses import fields
from datetime import timedelta
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from dkron_lab.cli import cli
from dkron_lab.cli import node as cli_node
from dkron_lab.config import (
    NOT_YET_SUPPORTED,
    OPTIONS,
    Config,
    env_name,
    find_config_file,
    load_config,
    read_config_file,
    resolve_config,
)
from dkron_lab.config.values import CATCHUP_POLICIES as CONFIG_CATCHUP_POLICIES
from dkron_lab.errors import ValidationError
from dkron_lab.model.job import CATCHUP_POLICIES


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def yml(tmp_path: Path) -> Path:
    return write(
        tmp_path / "dkron.yml",
        "server: true\nnode-name: from-file\nbootstrap-expect: 3\nregion: file-region\n"
        "tags:\n  role: web\n  dc: east\n",
    )


def test_every_config_field_has_exactly_one_key() -> None:
    assert {key.replace("-", "_") for key in OPTIONS} == {f.name for f in fields(Config)}
    assert not NOT_YET_SUPPORTED & OPTIONS.keys()


def test_the_agent_flags_are_the_declared_options(monkeypatch: pytest.MonkeyPatch) -> None:
    """``dkron-lab agent`` has one flag per option of ``Config`` and only ``--config`` besides,
    each handing its value to ``resolve_config`` under the option's key; its help is the
    option's. With the flags made from ``OPTIONS``, a second list of options cannot creep in."""
    given: dict[str, object] = {}

    def capture(flags: dict[str, object], **_: object) -> None:
        given.update(flags)
        raise ValidationError("captured")

    monkeypatch.setattr(cli_node, "resolve_config", capture)
    argv = ["agent"]
    for option in OPTIONS.values():
        flag = "--" + (option.flag_name or option.key)
        argv += [flag] if option.flag in ("switch", "toggle") else [flag, "x"]
    assert "captured" in CliRunner().invoke(cli, argv).output
    assert {key.replace("_", "-") for key in given} == {
        option.flag_name or option.key for option in OPTIONS.values()
    }
    params = {param.name: param for param in cli.commands["agent"].params}
    assert params.keys() - {"config_file"} == {
        (option.flag_name or option.key).replace("-", "_") for option in OPTIONS.values()
    }
    for option in OPTIONS.values():
        param = params[(option.flag_name or option.key).replace("-", "_")]
        assert isinstance(param, click.Option)
        assert param.help is not None and param.help.startswith(option.help), option.key
        assert param.multiple is (option.flag == "many"), option.key
        assert param.is_flag is (option.flag in ("switch", "toggle")), option.key


def test_every_option_is_a_config_key(tmp_path: Path) -> None:
    every_key = write(tmp_path / "dkron.yml", "".join(f"{key}:\n" for key in OPTIONS))
    loaded = resolve_config({}, env={}, config_file=every_key)
    assert loaded.warnings == () and loaded.config == Config(node_name=loaded.config.node_name)


def test_defaults_without_any_source(tmp_path: Path) -> None:
    loaded = resolve_config({}, env={}, search_dirs=[tmp_path])
    assert loaded.config == Config(node_name=loaded.config.node_name)
    assert loaded.file is None
    assert loaded.warnings == ()


def test_file_beats_default(yml: Path) -> None:
    config = resolve_config({}, env={}, config_file=yml).config
    assert (config.server, config.node_name, config.bootstrap_expect) == (True, "from-file", 3)
    assert config.tags == {"role": "web", "dc": "east"}
    assert config.datacenter == "dc1"


def test_env_beats_file(yml: Path) -> None:
    env = {"DKRON_NODE_NAME": "from-env", "DKRON_BOOTSTRAP_EXPECT": "5", "DKRON_SERVER": "false"}
    config = resolve_config({}, env=env, config_file=yml).config
    assert (config.node_name, config.bootstrap_expect, config.server) == ("from-env", 5, False)
    assert config.region == "file-region"


def test_flag_beats_env_and_file(yml: Path) -> None:
    env = {"DKRON_NODE_NAME": "from-env", "DKRON_REGION": "env-region"}
    config = resolve_config({"node_name": "from-flag"}, env=env, config_file=yml).config
    assert config.node_name == "from-flag"
    assert config.region == "env-region"


def test_not_given_flags_do_not_override(yml: Path) -> None:
    config = resolve_config({"node_name": None, "join": ()}, env={}, config_file=yml).config
    assert config.node_name == "from-file"


def test_empty_env_value_counts_as_unset(yml: Path) -> None:
    config = resolve_config({}, env={"DKRON_NODE_NAME": "  "}, config_file=yml).config
    assert config.node_name == "from-file"


def test_json_file_and_underscore_uppercase_keys(tmp_path: Path) -> None:
    path = write(
        tmp_path / "dkron.json",
        json.dumps({"Node_Name": "j", "RETRY-JOIN": ["a:1", "b:2"], "ui": False}),
    )
    config = resolve_config({}, env={}, config_file=path).config
    assert (config.node_name, config.retry_join, config.ui) == ("j", ("a:1", "b:2"), False)


def test_search_order_follows_dkron(tmp_path: Path) -> None:
    etc, home, local = tmp_path / "etc", tmp_path / "home", tmp_path / "config"
    write(home / "dkron.yaml", "node-name: home\n")
    write(local / "dkron.yml", "node-name: local\n")
    assert find_config_file([etc, home, local]) == home / "dkron.yaml"
    write(etc / "dkron.json", '{"node-name": "etc"}')
    loaded = resolve_config({}, env={}, search_dirs=[etc, home, local])
    assert (loaded.file, loaded.config.node_name) == (etc / "dkron.json", "etc")


def test_explicit_config_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"config file .*missing\.yml not found"):
        resolve_config({}, env={}, config_file=tmp_path / "missing.yml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("server: [unclosed\n", "does not parse"),
        ("- a\n- b\n", "must hold a map"),
    ],
)
def test_bad_files_name_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path / "dkron.yml", text)
    with pytest.raises(ValidationError, match=message) as caught:
        read_config_file(path)
    assert str(path) in str(caught.value)


def test_empty_file_is_no_settings(tmp_path: Path) -> None:
    path = write(tmp_path / "dkron.yml", "# nothing yet\n")
    assert resolve_config({}, env={}, config_file=path).config.server is False


# tags


def test_tag_flags_replace_file_tags(yml: Path) -> None:
    config = resolve_config({"tag": ("role=db", "zone=a=b")}, env={}, config_file=yml).config
    assert config.tags == {"role": "db", "zone": "a=b"}


def test_env_tag_list_and_tags_map(yml: Path) -> None:
    config = resolve_config({}, env={"DKRON_TAG": "a=1, b=2"}, config_file=yml).config
    assert config.tags == {"a": "1", "b": "2"}
    config = resolve_config({}, env={"DKRON_TAGS": '{"c": "3"}'}, config_file=yml).config
    assert config.tags == {"c": "3"}
    both = {"DKRON_TAGS": "c=3", "DKRON_TAG": "d=4"}
    assert resolve_config({}, env=both, config_file=yml).config.tags == {"d": "4"}


def test_tag_list_and_list_of_maps_in_file(tmp_path: Path) -> None:
    path = write(tmp_path / "dkron.yml", "tag: [x=1, y=2]\n")
    assert resolve_config({}, env={}, config_file=path).config.tags == {"x": "1", "y": "2"}
    path = write(tmp_path / "dkron.yml", "tags:\n  - foo: bar\n  - n: 1\n")
    assert resolve_config({}, env={}, config_file=path).config.tags == {"foo": "bar", "n": "1"}


def test_tag_without_equals_is_an_error() -> None:
    with pytest.raises(ValidationError, match=r"invalid tags 'role' from flag --tag: expected"):
        resolve_config({"tag": ("role",)}, env={}, search_dirs=[])


# value forms


def test_durations_and_sizes(tmp_path: Path) -> None:
    path = write(
        tmp_path / "dkron.yml",
        "retry-interval: 1m30s\nhistory-retention: 720h\nmax-body-size: 1MB\noutput-limit: 4096\n",
    )
    config = resolve_config({"output_limit": "64KB"}, env={}, config_file=path).config
    assert config.retry_interval == timedelta(seconds=90)
    assert config.history_retention == timedelta(hours=720)
    assert (config.max_body_size, config.output_limit) == (1024 * 1024, 64 * 1024)


@pytest.mark.parametrize("value", ["0", "0s", ""])
def test_zero_retention_keeps_everything(tmp_path: Path, value: str) -> None:
    path = write(tmp_path / "dkron.yml", f"history-retention: '{value}'\n")
    assert resolve_config({}, env={}, config_file=path).config.history_retention is None


def test_catchup_defaults_to_once_within_an_hour() -> None:
    config = resolve_config({}, env={}, search_dirs=[]).config
    assert (config.catchup, config.catchup_window) == ("once", timedelta(hours=1))
    assert CONFIG_CATCHUP_POLICIES == CATCHUP_POLICIES


def test_catchup_from_file_env_and_flag(tmp_path: Path) -> None:
    path = write(tmp_path / "dkron.yml", "catchup: all\ncatchup_window: 30m\n")
    config = resolve_config({}, env={}, config_file=path).config
    assert (config.catchup, config.catchup_window) == ("all", timedelta(minutes=30))
    env = {"DKRON_CATCHUP": "SKIP", "DKRON_CATCHUP_WINDOW": "2h"}
    config = resolve_config({}, env=env, config_file=path).config
    assert (config.catchup, config.catchup_window) == ("skip", timedelta(hours=2))
    flags = {"catchup": "once", "catchup_window": "0s"}
    config = resolve_config(flags, env=env, config_file=path).config
    assert (config.catchup, config.catchup_window) == ("once", timedelta(0))


def test_agent_takes_the_catchup_flags() -> None:
    runner = CliRunner()
    shown = runner.invoke(cli, ["agent", "--help"])
    assert "--catchup POLICY" in shown.output and "--catchup-window DURATION" in shown.output
    # A bad value stops the agent before any node is built.
    refused = runner.invoke(cli, ["agent", "--catchup", "twice"], env={"DKRON_CATCHUP": ""})
    assert refused.exit_code == 2
    assert "invalid catchup 'twice' from flag --catchup: expected one of skip, once or all" in (
        refused.output
    )
    late = runner.invoke(cli, ["agent", "--catchup-window", "-5m"])
    assert late.exit_code == 2 and "invalid catchup-window '-5m' from flag" in late.output


def test_booleans_in_every_spelling() -> None:
    spellings = [("true", True), ("1", True), ("on", True), ("FALSE", False), ("no", False)]
    for word, expected in spellings:
        assert resolve_config({}, env={"DKRON_UI": word}, search_dirs=[]).config.ui is expected


def test_join_accepts_commas_and_repeats() -> None:
    config = resolve_config({"join": ("a:1,b:2", "c:3")}, env={}, search_dirs=[]).config
    assert config.join == ("a:1", "b:2", "c:3")
    config = resolve_config({}, env={"DKRON_RETRY_JOIN": "x:1,y:2"}, search_dirs=[]).config
    assert config.retry_join == ("x:1", "y:2")


def test_encrypt_takes_a_keygen_key() -> None:
    key = "VjEGxP3N/60oaIxCAhby2g=="
    assert resolve_config({"encrypt": key}, env={}, search_dirs=[]).config.encrypt == key
    with pytest.raises(ValidationError, match="base64 of 16, 24 or 32 bytes"):
        resolve_config({"encrypt": "c2hvcnQ="}, env={}, search_dirs=[])


def test_log_level_is_normalised() -> None:
    assert resolve_config({"log_level": "WARN"}, env={}, search_dirs=[]).config.log_level == "warn"


@pytest.mark.parametrize(
    ("flags", "env", "file_text", "message"),
    [
        (
            {},
            {"DKRON_BOOTSTRAP_EXPECT": "abc"},
            "",
            "invalid bootstrap-expect 'abc' from env DKRON_BOOTSTRAP_EXPECT: "
            "expected a whole number",
        ),
        (
            {},
            {},
            "bootstrap-expect: abc\n",
            r"invalid bootstrap-expect 'abc' from file .*dkron.yml \(key 'bootstrap-expect'\)",
        ),
        (
            {"retry_interval": "10 seconds"},
            {},
            "",
            "invalid retry-interval '10 seconds' from flag --retry-interval: "
            "expected a Go duration",
        ),
        ({}, {}, "max-body-size: lots\n", "invalid max-body-size 'lots' .* e.g. 8MB"),
        ({}, {}, "server: maybe\n", "invalid server 'maybe' .*expected true or false"),
        ({}, {}, "node-name: [a, b]\n", "invalid node-name"),
        ({}, {}, "raft-multiplier: 11\n", "from 1 to 10"),
        ({"http_addr": "localhost:http"}, {}, "", "invalid http-addr 'localhost:http' from flag"),
        ({}, {}, "bind-addr: '{{ GetPrivateIP }}:8946'\n", "go-sockaddr templates"),
        ({}, {}, "log-level: loud\n", "one of debug, info, warn"),
        ({}, {}, "bootstrap-expect: -1\n", ">= 0"),
        ({}, {"DKRON_CATCHUP": "sometimes"}, "", "invalid catchup 'sometimes' from env"),
        ({}, {}, "catchup-window: soon\n", "invalid catchup-window 'soon' .*Go duration"),
    ],
)
def test_bad_values_name_key_source_and_form(
    tmp_path: Path, flags: dict[str, str], env: dict[str, str], file_text: str, message: str
) -> None:
    path = write(tmp_path / "dkron.yml", file_text)
    with pytest.raises(ValidationError, match=message):
        resolve_config(flags, env=env, config_file=path)


# warnings


def test_unknown_keys_warn_with_the_nearest_key(tmp_path: Path) -> None:
    path = write(tmp_path / "dkron.yml", "bootstrap-expct: 1\nnode-nam: x\nfrobnicate: 1\n")
    warnings = resolve_config({}, env={}, config_file=path).warnings
    assert warnings == (
        f"unknown key 'bootstrap-expct' in file {path}: did you mean 'bootstrap-expect'?",
        f"unknown key 'node-nam' in file {path}: did you mean 'node-name'?",
        f"unknown key 'frobnicate' in file {path}: it is ignored",
    )


def test_not_yet_supported_keys_warn_once(tmp_path: Path) -> None:
    path = write(
        tmp_path / "dkron.yml",
        "cronitor-endpoint: https://x\nrpc-port: 6868\nserver: true\n",
    )
    loaded = resolve_config({}, env={"DKRON_DOG_STATSD_ADDR": "localhost:8125"}, config_file=path)
    assert loaded.config.server is True
    assert loaded.warnings == (
        "Dkron options accepted but not yet supported (ignored): "
        "cronitor-endpoint, dog-statsd-addr, rpc-port",
    )


def test_load_config_logs_the_warnings(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path / "dkron.yml", "profile: true\nnode-name: w\n")
    with caplog.at_level(logging.WARNING, logger="dkron_lab.config"):
        config = load_config({}, env={}, config_file=path)
    assert config.node_name == "w"
    assert [r.getMessage() for r in caplog.records] == [
        "Dkron options accepted but not yet supported (ignored): profile"
    ]


def test_env_names() -> None:
    assert env_name("bootstrap-expect") == "DKRON_BOOTSTRAP_EXPECT"
    assert env_name("data_dir") == "DKRON_DATA_DIR"
