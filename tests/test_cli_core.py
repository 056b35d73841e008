"""`senet models` and `senet flops`: the interface the acceptance checks use."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from senet.cli import main

G = 1e9


pytestmark = pytest.mark.usefixtures("one_thread")


def _run(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def _errors(err: str) -> list[str]:
    """stderr lines other than plugin warnings (a missing optional package is not the user's error)."""
    return [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("senet: warning")]


def test_flops_json_totals(capsys):
    rc, out, _ = _run(capsys, "flops", "se_resnet50", "--json")
    assert rc == 0
    d = json.loads(out)
    assert isinstance(d["params"], int) and isinstance(d["flops"], int)
    assert d["params"] == 28_088_024
    assert abs(d["flops"] / G - 3.87) <= 0.01
    assert [b["name"] for b in d["blocks"]][:2] == ["SE_2_1", "SE_2_2"]


@pytest.mark.parametrize("argv,gflops,params", [
    (["resnet50", "--model.stride_in_1x1", "false"], 4.09, 25_557_032),
    (["se_resnet50", "--se.squeeze", "none", "--se.bias", "false"], 4.27, None),
    (["se_resnet50", "--se.stages", "4", "--se.bias=false", "--se.reduction", "16"], 3.86, None),
    (["se_mobilenet_v1"], 0.572, None),
])
def test_flops_overrides(capsys, argv, gflops, params):
    rc, out, _ = _run(capsys, "flops", *argv, "--json")
    assert rc == 0
    d = json.loads(out)
    assert abs(d["flops"] / G - gflops) <= 0.01 * max(1, gflops)
    if params is not None:
        assert d["params"] == params


def test_flops_table(capsys):
    rc, out, _ = _run(capsys, "flops", "se_resnet20", "--input-size", "32")
    assert rc == 0
    assert "SE_4_3" in out and "total:" in out and "64→4" in out


def test_models_lists_every_contract_name(capsys):
    rc, out, _ = _run(capsys, "models", "--json")
    assert rc == 0
    names = {r["name"] for r in json.loads(out)}
    for n in ("resnet20", "resnet164", "wrn16_8", "resnet152", "resnext101_32x4d", "bn_inception",
              "mobilenet_v1", "se_resnet50", "se_bn_inception", "se_mobilenet_v1"):
        assert n in names
    rc, out, _ = _run(capsys, "models")
    assert rc == 0 and "se_mobilenet_v1" in out


@pytest.mark.parametrize("argv,match", [
    (["se_resnet50", "--se.gate", "sigmod"], "choose one of: sigmoid"),
    (["se_resnet50", "--se.reduction", "0"], "must be > 0"),
    (["se_resnet20", "--se.stages", "5"], "stages are 2, 3, 4"),
    (["se_bn_inception", "--se.placement", "pre"], "choose one of: standard"),
    (["resnet50", "--se.gate", "tanh"], "has no SE blocks"),
    (["se_resnet5O"], "unknown model"),
    (["se_resnet50", "--lr", "0.1"], "--se.* and --model.*"),
])
def test_user_errors_exit_2_with_one_line(capsys, argv, match):
    rc, out, err = _run(capsys, "flops", *argv)
    assert rc == 2
    lines = _errors(err)
    assert len(lines) == 1 and lines[0].startswith("senet: error:") and match in lines[0], err
    assert "Traceback" not in err


def test_console_entry_point_bad_gate():
    """The real process: exit status 2 and one error line, no traceback."""
    p = subprocess.run([sys.executable, "-m", "senet.cli", "flops", "se_resnet50", "--se.gate", "sigmod"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    lines = _errors(p.stderr)
    assert len(lines) == 1 and "unknown gate 'sigmod'" in lines[0], p.stderr


# ---------------------------------------------------------------------------------------------
# Only the suite's own user errors become one line; bugs keep their traceback, which their fix needs
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def raising_command():
    """A temporary `senet boom` command whose run raises the exception the test puts in `raises`."""
    from senet.cli import COMMANDS, Command

    class Boom(Command):
        name = "boom"
        raises: BaseException = ValueError("an internal bug")

        def run(self, args, overrides):
            raise self.raises

    cmd = Boom()
    COMMANDS.add("boom", cmd)
    yield cmd
    COMMANDS.remove("boom")


def test_an_internal_value_error_keeps_its_traceback(capsys, raising_command):
    for exc in (ValueError("an internal bug"), KeyError("x"), IndexError("y")):
        raising_command.raises = exc
        with pytest.raises(type(exc)):
            main(["boom"])


def test_a_user_error_is_one_line_and_exit_2(capsys, raising_command):
    from senet.cli import UserError
    from senet.errors import UserValueError

    for exc in (UserError("bad thing\nsecond line"), UserValueError("bad value"),
                FileNotFoundError("no such file: x")):
        raising_command.raises = exc
        rc, out, err = _run(capsys, "boom")
        assert rc == 2 and len(_errors(err)) == 1 and "Traceback" not in err
        assert _errors(err)[0] == f"senet: error: {str(exc).splitlines()[0]}"


def test_the_process_prints_a_traceback_for_a_bug():
    code = ("import sys; from senet import cli\n"
            "class Boom(cli.Command):\n"
            "    name = 'boom'\n"
            "    def run(self, args, overrides):\n"
            "        raise ValueError('an internal bug')\n"
            "cli.COMMANDS.add('boom', Boom())\n"
            "sys.exit(cli.main(['boom']))\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and "Traceback" in p.stderr and "ValueError: an internal bug" in p.stderr


def test_the_library_user_errors_are_value_errors_too():
    from senet import checkpoint, config, data, resume
    from senet.cli import UserError
    from senet.errors import UserValueError
    from senet.se import GATES

    for cls in (config.ConfigError, data.DatasetNotFoundError, checkpoint.CheckpointError, resume.ResumeError):
        assert issubclass(cls, UserError) and issubclass(cls, ValueError)
    with pytest.raises(UserValueError, match="unknown gate"):
        GATES.get("sigmod")


# ---------------------------------------------------------------------------------------------
# No option is abbreviated: a prefix that works today would change meaning with the next option
# ---------------------------------------------------------------------------------------------
def test_no_parser_accepts_abbreviations(capsys):
    from senet.cli import build_parser

    parser = build_parser()
    assert parser.allow_abbrev is False
    sub = next(a for a in parser._actions if a.choices and "flops" in a.choices)
    for name, p in sub.choices.items():
        assert p.allow_abbrev is False, name
    nested = sub.choices["models"].add_subparsers().add_parser("x")  # a command's own subcommands
    assert nested.allow_abbrev is False
    rc, out, err = _run(capsys, "models", "--js")  # --js is not --json
    assert rc == 2 and "unrecognized arguments: --js" in err and out == ""


def test_sweep_seed_is_not_seeds(capsys, monkeypatch):
    sweep = pytest.importorskip("ablations.sweep")

    def no_ray(*a, **k):
        raise AssertionError("Ray must not start")

    monkeypatch.setattr(sweep, "connect", no_ray)
    rc, out, err = _run(capsys, "sweep", "gate", "--seed", "3", "--preset", "smoke")
    lines = _errors(err)
    assert rc == 2 and len(lines) == 1 and "--seed " in lines[0] and "--seeds N" in lines[0], err
