import pytest

from ssrl import config as config_lib
from ssrl.config import ConfigError, DrQV2Config, SACConfig, parse_overrides


def test_defaults_and_typed_overrides():
    cfg = parse_overrides(["agent=drqv2", "agent.lr=3e-4", "frames=1e4", "wandb=true", "encoder.feature_dim=64"])
    assert isinstance(cfg.agent, DrQV2Config)
    assert cfg.agent.lr == pytest.approx(3e-4) and cfg.frames == 10_000 and cfg.wandb is True
    assert cfg.encoder.feature_dim == 64
    # group selection applies before group keys, whatever the order on the command line
    cfg = parse_overrides(["agent.batch_size=32", "agent=sac"])
    assert isinstance(cfg.agent, SACConfig) and cfg.agent.batch_size == 32


@pytest.mark.parametrize("args, message", [
    (["agent.lrr=1"], "unknown key 'agent.lrr'.*Did you mean: lr"),
    (["framez=10"], "unknown key 'framez'.*frames"),
    (["agent=sacc"], "unknown agent 'sacc'.*sac"),
    (["representation=curll"], "unknown representation"),
    (["frames=ten"], "frames='ten': expected an integer"),
    (["wandb=maybe"], "expected true or false"),
    (["obs=pix"], "obs='pix': choose one of"),
    (["frames=0"], "frames=0: must be positive"),
    (["agent.augmentation=blur"], "agent.augmentation='blur'"),
    (["encoder=3"], "'encoder' is a group"),
    (["seed"], "expected key=value"),
    (["env=cheetah"], "env='cheetah'"),
])
def test_bad_overrides_name_the_problem(args, message):
    with pytest.raises(ConfigError, match=message):
        parse_overrides(args)


def test_yaml_round_trip_and_diff(tmp_path):
    cfg = parse_overrides(["agent=drqv2", "agent.stddev_schedule=linear(1.0,0.2,5000)", "seed=3"])
    config_lib.save(cfg, tmp_path / "config.yaml")
    loaded = config_lib.load(tmp_path / "config.yaml")
    assert config_lib.diff(cfg, loaded) == {}
    other = parse_overrides(["agent=drqv2", "seed=4"])
    changed = config_lib.diff(cfg, other)
    assert set(changed) == {"seed", "agent.stddev_schedule"}


def test_stored_config_from_before_a_key_gets_the_value_it_ran_with(tmp_path):
    """A run's config.yaml from before `representation.mask_space` (and masked's VICReg keys) existed: masked
    then masked its inputs, so the rebuilt config says `input`, not today's default, and the other keys it
    predates take their defaults; other representations are left alone."""
    cfg = config_lib.parse_overrides(["representation=masked", "representation.mask_space=input",
                                      "representation.k=2", "representation.mask_ratio=0.5"])
    old = config_lib.to_dict(cfg)
    for key in ("mask_space", "variance_coef", "covariance_coef", "variance_target"):
        del old["representation"][key]
    rebuilt = config_lib.from_dict(old)
    assert config_lib.diff(rebuilt, cfg) == {} and rebuilt.representation.mask_space == "input"
    assert config_lib.parse_overrides(["representation=masked"]).representation.mask_space == "latent"
    spr = config_lib.to_dict(config_lib.parse_overrides(["representation=spr"]))
    assert config_lib.complete(spr, {}) == spr


def test_stored_config_with_unknown_key_is_rejected(tmp_path):
    (tmp_path / "config.yaml").write_text("env: dmc/cartpole-swingup\nagent:\n  name: sac\n  lrate: 0.1\n")
    with pytest.raises(ConfigError, match="agent.lrate"):
        config_lib.load(tmp_path / "config.yaml")


def test_missing_extra_names_the_pip_extra():
    from ssrl.errors import require_extra

    require_extra("sweep", "yaml")  # installed: no error
    with pytest.raises(ImportError, match=r"no_such_module_xyz not installed; .*pip install 'ssrl\[robot\]'"):
        require_extra("robot", "yaml", "no_such_module_xyz")
