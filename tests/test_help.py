"""Help that teaches: every config key has a description drawn from the dataclass's own field comments, and
`ssrl <command> --help`, `ssrl config` and `ssrl config --describe KEY` show keys, defaults, descriptions and
allowed values."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from ssrl import config as config_lib
from ssrl.cli import COMMANDS, USAGE, main
from ssrl.config import describe


@dataclasses.dataclass
class _Base:
    a: int = 1  # the a
    # the b, said on the
    # lines above it
    b: str = "x"
    c: float = 0.5


@dataclasses.dataclass
class _Child(_Base):
    a: int = 2
    c: float = 1.5  # the child's c


def test_field_docs_come_from_trailing_or_preceding_comments_and_are_inherited():
    assert describe.field_docs(_Child) == {"a": "the a", "b": "the b, said on the lines above it", "c": "the child's c"}


def _configs():
    for agent in config_lib.AGENTS:
        for rep in config_lib.REPRESENTATIONS:
            yield config_lib.apply_overrides(config_lib.TrainConfig(), [f"agent={agent}", f"representation={rep}"])
    from ssrl.experiments.pretrain import PretrainConfig
    from ssrl.experiments.transfer import TransferConfig

    yield PretrainConfig()
    yield TransferConfig()


def test_every_key_of_every_config_has_a_one_line_description():
    missing = sorted({k.key for cfg in _configs() for k in describe.flat(cfg).values() if not k.doc})
    assert not missing, f"keys without a description (add a comment on the field in its dataclass): {missing}"


def test_train_help_lists_every_key_with_default_and_description_grouped_like_config(capsys):
    assert main(["train", "representation=spr", "--help"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: ssrl train")
    cfg = config_lib.apply_overrides(config_lib.TrainConfig(), ["representation=spr"])
    lines = text.splitlines()
    for key in describe.flat(cfg).values():
        if key.type == "group":
            continue
        line = next(line for line in lines if line.split()[:1] == [key.key])
        assert describe.format_value(key.value) in line and key.doc in line
    headers = [line.split(":")[0] for line in lines if line[:1].isalpha() and ":" in line]
    assert headers[-6:] == ["agent=sac", "encoder", "representation=spr", "speed", "guard", "multirun (grids)"]
    assert "representation.k " in text and "seeds=N" in text


def test_ppo_help_shows_ppo_keys(capsys):
    assert main(["ppo", "--help"]) == 0
    text = capsys.readouterr().out
    assert "agent.num_steps" in text and "agent.batch_size" not in text


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_is_in_the_top_level_help_and_has_its_own(command, capsys):
    assert f"  {command} " in USAGE
    try:
        code = main([command, "--help"])
    except SystemExit as e:  # sweep and report: argparse
        code = e.code
    assert code == 0
    assert capsys.readouterr().out.lower().startswith("usage: ssrl " + command)


def test_unknown_command_lists_every_command(capsys):
    assert main(["trian"]) == 2
    err = capsys.readouterr().err
    assert all(c in err for c in COMMANDS)


def test_config_describe_gives_type_default_description_and_allowed_values(capsys):
    assert main(["config", "--describe", "agent.augmentation"]) == 0
    out = capsys.readouterr().out
    assert "type:        str" in out and "default:     shift" in out and "allowed:     none, shift, crop" in out
    assert "crop (RAD/CURL" in out
    assert main(["config", "agent=drqv2", "--describe=agent.n_step"]) == 0
    assert "default:     3" in capsys.readouterr().out
    assert main(["config", "--describe", "representation"]) == 0
    assert "allowed:     none, curl, spr, masked, world_model" in capsys.readouterr().out
    assert main(["config", "--describe", "agent.nstep"]) == 2
    assert "Did you mean: agent.n_step" in capsys.readouterr().err


def test_config_prints_loadable_yaml_with_a_description_per_key(capsys):
    assert main(["config", "agent=drqv2"]) == 0
    out = capsys.readouterr().out
    assert yaml.safe_load(out) == config_lib.to_dict(config_lib.parse_overrides(["agent=drqv2"]))
    assert "frames: 100000" in out and "# budget in environment frames" in out
