"""The ``streamproc`` command's argument handling, in-process (nothing is started): help texts, usage
errors with the subcommand's usage, exit code 2 with one line for bad flags and a taken web port."""

from __future__ import annotations

import argparse
import socket
from collections.abc import Iterator

import pytest

from streamproc.cli import _parser, check_web_port, main
from streamproc.errors import ConfigError

COMMANDS = ("demo", "broker", "worker", "generate", "replay", "score", "backtest")


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    for action in _parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no subcommands")


@pytest.fixture
def listening() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


def test_every_subcommand_says_what_it_does_and_every_option_has_help() -> None:
    subs = _subparsers()
    assert set(subs) == set(COMMANDS)
    for name, sub in subs.items():
        assert sub.description and len(sub.description) > 40, name
        assert "Exit codes" in (sub.epilog or ""), name
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help and action.help.strip(), f"{name} {action.option_strings or action.dest}"


def test_backtest_help_says_what_it_prints(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["backtest", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "timestamp,value,expected,score,alert" in out
    for text in ("input CSV file", "ISO 8601", "count per bucket", "orders (default) or clicks", "progress bar"):
        assert text in " ".join(out.split()), text  # one help text per option (argparse wraps lines)
    assert "median spacing" in out


@pytest.mark.parametrize("command", ["score", "backtest", "demo", "generate"])
def test_an_unknown_option_shows_the_subcommands_usage(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([command, "--bogus"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: streamproc {command} ")
    # backtest and generate also miss a required option, which argparse reports first
    assert err.splitlines()[-1].startswith("streamproc: error: ")


def test_score_with_an_unknown_option_prints_scores_usage_not_the_top_level(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["score", "--bogus", "some text"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == ["usage: streamproc score [-h] [--file F] [--progress] [TEXT ...]",
                   "streamproc: error: unrecognized arguments: --bogus"]


@pytest.mark.parametrize(("argv", "names"), [
    (["demo", "--web-port", "99999"], "--web-port"),
    (["demo", "--web-port", "http"], "--web-port"),
    (["demo", "--duration", "0"], "--duration"),
    (["broker", "--port", "70000"], "--port"),
    (["generate", "--rate", "0", "--duration", "5"], "--rate"),
    (["generate", "--rate", "5", "--duration", "-1"], "--duration"),
    (["generate", "--rate", "5", "--duration", "5", "--speed", "-2"], "--speed"),
])
def test_bad_flags_fail_at_once_naming_the_flag(argv: list[str], names: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith("streamproc: error: argument ") and names in last
    assert "STREAMPROC_" not in err


def test_a_taken_web_port_is_a_one_line_config_error(listening: int) -> None:
    with pytest.raises(ConfigError) as exc:
        check_web_port("127.0.0.1", listening, "--web-port N")
    message = str(exc.value)
    assert f"port {listening} is in use" in message and "--web-port N" in message and "\n" not in message
    # the worker binds 0.0.0.0 by default: a program on 127.0.0.1 takes the port as well
    with pytest.raises(ConfigError):
        check_web_port("0.0.0.0", listening, "STREAMPROC_WEB_PORT=N")


def test_a_free_web_port_passes() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    check_web_port("0.0.0.0", port, "--web-port N")


def test_the_demo_checks_its_web_port_before_starting_anything(listening: int, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    import streamproc.demo

    def must_not_start(*args: object, **kwargs: object) -> int:
        raise AssertionError("the demo started although its port is taken")

    monkeypatch.setattr(streamproc.demo, "run_demo", must_not_start)
    monkeypatch.delenv("STREAMPROC_WEB_PORT", raising=False)
    assert main(["demo", "--web-port", str(listening)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"port {listening} is in use" in err[0] and "--web-port" in err[0]
    monkeypatch.setenv("STREAMPROC_WEB_PORT", str(listening))  # the same when the port comes from the environment
    assert main(["demo"]) == 2
    assert f"port {listening} is in use" in capsys.readouterr().err
