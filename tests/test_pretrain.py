"""Reward-free datasets, offline pretraining, the backbone file format and its use in ssrl train / SB3."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ssrl import config as config_lib
from ssrl.cli import main
from ssrl.data.dataset import Dataset, info
from ssrl.envs.metaworld import INSTALL as METAWORLD_INSTALL
from ssrl.errors import BackboneError, ConfigError, DatasetError
from ssrl.experiments.collect import collect, export_run
from ssrl.experiments.offpolicy import Trainer
from ssrl.experiments.pretrain import Pretrainer, lr_factor, parse
from ssrl.nn.backbone import Backbone, ResNet18, load_backbone
from ssrl.runtime.checkpoint import CHECKPOINT

ENV = "dmc/cartpole-swingup"  # action repeat 8: 125 steps per episode
SIZE = 32


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("data") / "cartpole"
    collect(ENV, "random", 2000, out, size=SIZE, frame_stack=3, progress=False)
    return out


def pretrain_args(data: Path, out: Path, **extra: str) -> list[str]:
    args = {"representation": "spr", "data": str(data), "out": str(out), "steps": "30", "batch_size": "16",
            "warmup": "5", "log_every": "5", "checkpoint_every": "10", "progress": "false", "representation.k": "2"}
    return [f"{k}={v}" for k, v in (args | extra).items()]


@pytest.fixture(scope="module")
def backbone_dir(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("backbone")
    Pretrainer(parse(pretrain_args(dataset, out))).run()
    return out


def images(n: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (n, 9, SIZE, SIZE), dtype=np.uint8))


# ---------------------------------------------------------------------------------------------- datasets
def test_collect_writes_replay_episodes_and_info_counts_them(dataset: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["data", "info", str(dataset)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["tasks"] == [ENV] and shown["episodes"] == 2
    assert shown["transitions"] == 250 and shown["steps"] == 252 and shown["frames"] == 2000
    assert shown["bytes"] == sum(p.stat().st_size for p in dataset.iterdir())
    assert shown["observation"] == {"pixels": f"uint8[9, {SIZE}, {SIZE}]", "state": "float32[5]",
                                    "physics_state": "float64[4]"}
    data = Dataset(dataset, "pixels", seed=0)
    batch = data.sample(8)
    assert batch["obs"].shape == (8, 9, SIZE, SIZE) and batch["obs"].dtype == np.uint8
    full = Dataset(dataset).sample_sequences(4, 3)
    assert full["obs"]["physics_state"].shape == (4, 4, 4) and full["action"].shape == (4, 3, 1)


def test_corrupt_dataset_files_are_named(dataset: Path, tmp_path: Path) -> None:
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(dataset, bad)
    first = min(bad.glob("*.npz"))
    first.write_bytes(first.read_bytes()[:1000])  # truncated
    with pytest.raises(DatasetError, match=first.name):
        Dataset(bad)
    with np.load(min(dataset.glob("*.npz"))) as z:
        arrays = dict(z)
    arrays["obs/pixels"] = arrays["obs/pixels"].astype(np.float32)  # wrong dtype
    np.savez(first, **arrays)
    with pytest.raises(DatasetError, match=rf"{first.name}.*obs/pixels.*float32.*expected uint8"):
        Dataset(bad)
    (bad / "dataset.json").unlink()
    with pytest.raises(DatasetError, match="dataset.json not found"):
        info(bad)
    with pytest.raises(DatasetError, match="no observation entry 'depth'"):
        Dataset(dataset, "depth")


def test_merge_renumbers_every_episode_and_refuses_mismatched_spaces(dataset: Path, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture) -> None:
    assert main(["data", "merge", str(dataset), str(dataset), f"out={tmp_path / 'both'}"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["episodes"] == 4 and shown["transitions"] == 500 and shown["policy"] == "random + random"
    merged, single = Dataset(tmp_path / "both", "pixels", seed=0), Dataset(dataset, "pixels", seed=0)
    assert len(merged) == 2 * len(single)
    first = np.load(sorted(dataset.glob("*.npz"))[0])["obs/pixels"]
    third = np.load(sorted((tmp_path / "both").glob("*.npz"))[2])["obs/pixels"]
    assert np.array_equal(first, third)  # sources in order: episode 0 of the second copy is episode 2
    assert main(["data", "merge", str(dataset), str(dataset), f"out={tmp_path / 'both'}"]) == 2
    assert "both is not empty; choose a new out= directory" in capsys.readouterr().err  # never writes into data
    assert len(list((tmp_path / "both").glob("*.npz"))) == 4
    other = tmp_path / "other"
    collect(ENV, "random", 1000, other, size=SIZE + 8, frame_stack=3, progress=False)
    assert main(["data", "merge", str(dataset), str(other), f"out={tmp_path / 'mixed'}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ssrl data: error: cannot merge") and "observation_space differ" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "mixed").exists()



def test_merge_keys_keeps_the_entries_tasks_share(dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """MetaWorld tasks share pixels but not physics_state sizes: keys= merges the shared entries only."""
    import shutil

    other = tmp_path / "other"  # the same frames, with a 6-entry physics_state as another task would have
    shutil.copytree(dataset, other)
    for file in other.glob("*.npz"):
        with np.load(file) as z:
            arrays = dict(z)
        arrays["obs/physics_state"] = np.zeros((len(arrays["obs/pixels"]), 6))
        np.savez(file, **arrays)
    card = json.loads((other / "dataset.json").read_text())
    card["observation_space"]["spaces"]["physics_state"]["shape"] = [6]
    (other / "dataset.json").write_text(json.dumps(card))
    assert main(["data", "merge", str(dataset), str(other), f"out={tmp_path / 'all'}"]) == 2
    err = capsys.readouterr().err
    assert "observation_space differ (entries physics_state); keys=pixels,state merges only the entries they share" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "all").exists()
    assert main(["data", "merge", str(dataset), str(other), f"out={tmp_path / 'all'}", "keys=pixels,state"]) == 0
    merged = Dataset(tmp_path / "all")
    assert list(merged.observation_space.spaces) == ["pixels", "state"] and len(merged) == 2 * len(Dataset(dataset))
    batch = merged.sample_sequences(4, 2)
    assert batch["obs"]["pixels"].shape[:2] == (4, 3) and "physics_state" not in batch["obs"]
    assert main(["data", "merge", str(dataset), str(other), f"out={tmp_path / 'x'}", "keys=depth"]) == 2
    assert "has no observation entry 'depth'; it has physics_state, pixels, state" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()

def test_collect_refuses_unknown_policy_and_scripted_without_expert(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="policy='greedy'"):
        collect(ENV, "greedy", 100, tmp_path / "a", size=SIZE, progress=False)
    with pytest.raises(DatasetError, match="no scripted expert"):
        collect(ENV, "scripted", 100, tmp_path / "b", size=SIZE, progress=False)



def test_an_interrupted_collect_leaves_out_empty_and_a_rerun_completes(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture) -> None:
    import fcntl

    from ssrl.envs import make
    from ssrl.experiments.collect import WithPhysics, record

    out, calls = tmp_path / "data", []
    env = WithPhysics(make(ENV, obs="pixels+state", size=SIZE, frame_stack=1))

    def act(obs: dict) -> np.ndarray:
        calls.append(1)
        if len(calls) > 300:  # the third episode: two are on disk by now
            raise KeyboardInterrupt
        return env.action_space.sample()

    meta = {"tasks": [ENV], "policy": "random"}
    with pytest.raises(KeyboardInterrupt):
        record(env, act, out, frames=4000, meta=meta, progress=False)
    scratch = tmp_path / ".data.partial"
    assert not out.exists() and len(list(scratch.glob("*.npz"))) == 2  # finished episodes, in the scratch only
    with open(scratch / ".lock") as held:  # another process writing the same out
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert main(["collect", f"env={ENV}", "frames=1000", f"out={out}", f"size={SIZE}", "progress=false"]) == 2
        assert "is being written by another process" in capsys.readouterr().err
    assert main(["collect", f"env={ENV}", "frames=1000", f"out={out}", f"size={SIZE}", "progress=false"]) == 0
    assert info(out)["episodes"] == 1 and sorted(p.name for p in out.iterdir()) == ["000000_125.npz", "dataset.json"]
    assert not scratch.exists()
    env.close()

# ---------------------------------------------------------------------------------------------- pretrain
def test_lr_warmup_then_cosine() -> None:
    assert lr_factor(0, 10, 110) == pytest.approx(0.1) and lr_factor(9, 10, 110) == pytest.approx(1.0)
    assert lr_factor(60, 10, 110) == pytest.approx(0.5) and lr_factor(110, 10, 110) == pytest.approx(0.0)
    assert all(lr_factor(s, 10, 110) >= lr_factor(s + 1, 10, 110) for s in range(10, 110))


def test_pretrain_logs_falling_loss_and_writes_a_backbone(backbone_dir: Path) -> None:
    """The run's plumbing only: rows, schedule and card, and a falling loss - which a collapsing objective shows
    too: these 30 SPR steps leave a backbone whose features of 128 dataset frames have effective rank 1.9 (13-22
    for the same encoder at init), which ``ssrl.representations.base.collapse`` flags. That pretraining *learns*
    is tested by tests/test_representations.py's linear physics probe, through the same ``pretrain_step``."""
    import csv

    rows = list(csv.DictReader((backbone_dir / "pretrain.csv").open()))
    assert [int(r["step"]) for r in rows] == [5, 10, 15, 20, 25, 30]
    assert float(rows[-1]["loss"]) < 0.8 * float(rows[0]["loss"])
    assert float(rows[-1]["lr"]) == pytest.approx(0.0, abs=1e-12)  # cosine ends at 0
    card = json.loads((backbone_dir / "backbone.json").read_text())
    assert card["provenance"]["objective"] == "spr" and card["provenance"]["steps"] == 30
    assert card["input"] | {"normalization": None} == {
        "channels": 9, "frame_stack": 3, "size": SIZE, "dtype": "uint8", "range": [0, 255],
        "layout": "channels-first, oldest frame first", "normalization": None}
    assert card["feature_dim"] == 50


def test_pretrain_resume_is_exact(dataset: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    whole = Pretrainer(parse(pretrain_args(dataset, tmp_path / "whole", steps="12", warmup="2")))
    whole.run()
    cut = Pretrainer(parse(pretrain_args(dataset, tmp_path / "cut", steps="12", warmup="2")))
    for _ in range(7):
        cut.train_step()
    cut.save_checkpoint()
    cut.release()  # "killed" after step 7: a dead process holds no lock
    resumed = Pretrainer(parse(pretrain_args(dataset, tmp_path / "cut", steps="12", warmup="2")))
    assert resumed.step == 7
    resumed.run()
    for a, b in zip(whole.encoder.state_dict().values(), resumed.encoder.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(ConfigError, match="different config.*batch_size"):
        Pretrainer(parse(pretrain_args(dataset, tmp_path / "cut", steps="12", warmup="2", batch_size="8")))


def test_pretraining_checkpoint_from_before_a_key_resumes_with_the_value_it_ran(dataset: Path, tmp_path: Path) -> None:
    """A checkpoint whose stored config predates `representation.mask_space` and masked's VICReg keys (removed
    here, as an older ssrl wrote it): those keys take the value the run had (input masking) or their defaults, so
    its own settings resume it, and today's defaults are refused by name."""
    old = {"representation": "masked", "representation.mask_space": "input", "representation.k": "2",
           "representation.mask_ratio": "0.5"}
    run = Pretrainer(parse(pretrain_args(dataset, tmp_path, steps="12", warmup="2", **old)))
    for _ in range(3):
        run.train_step()
    run.save_checkpoint()
    run.release()
    path = tmp_path / CHECKPOINT
    state = torch.load(path, weights_only=True)
    for key in ("mask_space", "variance_coef", "covariance_coef", "variance_target"):
        del state["config"]["representation"][key]
    torch.save(state, path)
    today = {"representation": "masked", "representation.k": "2", "representation.mask_ratio": "0.5"}
    with pytest.raises(ConfigError, match=r"different config \(representation.mask_space: 'input' -> 'latent'\)"):
        Pretrainer(parse(pretrain_args(dataset, tmp_path, steps="12", warmup="2", **today)))
    resumed = Pretrainer(parse(pretrain_args(dataset, tmp_path, steps="12", warmup="2", **old)))
    assert resumed.step == 3


def test_pretrain_config_errors(dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs data="):
        parse(["representation=spr"])
    with pytest.raises(ConfigError, match="unknown key 'agent.lr'"):
        parse([f"data={dataset}", f"out={tmp_path}", "agent.lr=1"])
    with pytest.raises(ConfigError, match="warmup"):
        parse([f"data={dataset}", f"out={tmp_path}", "steps=5", "warmup=5"])
    with pytest.raises(ConfigError, match="log_every=0: must be positive"):
        parse([f"data={dataset}", f"out={tmp_path}", "log_every=0"])


@pytest.mark.parametrize("steps, warmup, log_every, checkpoint_every", [(50, 2, 1, 5), (3000, 150, 60, 300),
                                                                        (100_000, 500, 100, 1000)])
def test_schedule_defaults_derive_from_steps(dataset: Path, tmp_path: Path, steps: int, warmup: int,
                                             log_every: int, checkpoint_every: int) -> None:
    from ssrl.experiments.pretrain import warmup_steps

    cfg = parse([f"data={dataset}", f"out={tmp_path}", f"steps={steps}"])
    assert (warmup_steps(cfg), cfg.log_every, cfg.checkpoint_every) == (warmup, log_every, checkpoint_every)
    cfg = parse([f"data={dataset}", f"out={tmp_path}", f"steps={steps}", "log_every=7", "checkpoint_every=9"])
    assert (cfg.log_every, cfg.checkpoint_every) == (7, 9)  # what the user sets is kept


def test_a_short_pretrain_runs_with_the_defaults(dataset: Path, tmp_path: Path) -> None:
    """``ssrl pretrain ... steps=50`` once failed on its own default warmup."""
    assert main(["pretrain", "representation=curl", f"data={dataset}", f"out={tmp_path / 'b'}", "steps=50",
                 "batch_size=8", "progress=false"]) == 0
    rows = (tmp_path / "b" / "pretrain.csv").read_text().splitlines()
    assert len(rows) == 51 and (tmp_path / "b" / "backbone.safetensors").exists()


# ---------------------------------------------------------------------------------------------- backbone
def test_backbone_round_trip_gives_identical_features(backbone_dir: Path, dataset: Path) -> None:
    import ssrl

    loaded = ssrl.load_backbone(backbone_dir)
    again = Pretrainer(parse(pretrain_args(dataset, backbone_dir)))  # resumes the finished run
    x = images()
    with torch.no_grad():
        assert torch.equal(loaded(x), again.encoder(x))
    assert loaded.features_dim == 50 and loaded.input_shape == (9, SIZE, SIZE)


def test_tampered_or_broken_backbones_are_refused(backbone_dir: Path, tmp_path: Path) -> None:
    import shutil

    from safetensors.torch import load_file, save_file

    def fresh(name: str) -> Path:
        shutil.copytree(backbone_dir, tmp_path / name)
        return tmp_path / name

    edited = fresh("card")
    card = json.loads((edited / "backbone.json").read_text())
    card["provenance"]["steps"] = 100_000
    (edited / "backbone.json").write_text(json.dumps(card))
    with pytest.raises(BackboneError, match="card was edited"):
        load_backbone(edited)

    weights = fresh("weights")
    from safetensors import safe_open

    with safe_open(str(weights / "backbone.safetensors"), "pt") as f:
        metadata = f.metadata()
    tensors = load_file(str(weights / "backbone.safetensors"))
    tensors["head.0.bias"] += 0.01
    save_file(tensors, str(weights / "backbone.safetensors"), metadata=metadata)
    with pytest.raises(BackboneError, match="weights do not match"):
        load_backbone(weights)

    truncated = fresh("truncated")
    path = truncated / "backbone.safetensors"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(BackboneError, match="unreadable"):
        load_backbone(truncated)

    with pytest.raises(BackboneError, match="not found"):
        load_backbone(tmp_path / "nothing")


def test_resnet18_state_dict_from_a_local_file(tmp_path: Path) -> None:
    net = ResNet18()
    # torchvision's resnet18 has 11,689,512 parameters, 513,000 of them in fc (512 x 1000 + 1000).
    assert sum(p.numel() for p in net.parameters()) == 11_689_512 - 513_000
    for module in net.modules():  # non-trivial BatchNorm statistics, so a wrong mapping would show
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    state = {f"module.convnet.{k}": v for k, v in net.state_dict().items()}
    state["module.convnet.fc.weight"] = torch.zeros(1000, 512)  # classifier heads are dropped
    torch.save({"state_dict": state}, tmp_path / "r3m_like.pt")
    loaded = load_backbone(tmp_path / "r3m_like.pt", frame_stack=2, size=32)
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (3, 6, 32, 32), dtype=np.uint8))
    net.eval(), loaded.eval()
    with torch.no_grad():
        features = loaded(x)
        assert features.shape == (3, 1024)
        assert torch.allclose(features[:, 512:], net(x[:, 3:]), atol=1e-5)
        maps = loaded.maps(x)  # layer4's maps, frames stacked on channels: their spatial mean is the feature
        assert maps.shape == (3, 1024, 1, 1) and loaded.maps_shape() == (1024, 1, 1)
        assert torch.allclose(maps.mean((2, 3)), features, atol=1e-6)
    assert loaded.card["architecture"] == "resnet18" and loaded.card["input"]["normalization"].startswith("imagenet")

    torch.save({"conv.weight": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(BackboneError, match="not a ResNet-18 state dict"):
        load_backbone(tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(BackboneError, match="not a readable torch state dict"):
        load_backbone(tmp_path / "junk.pt")


def test_frozen_means_no_grads_and_no_batchnorm_drift(tmp_path: Path) -> None:
    backbone = load_resnet(tmp_path).freeze()
    parent = torch.nn.Sequential(backbone, torch.nn.Linear(512, 1))
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    parent.train()
    parent(torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)).sum().backward()
    assert not backbone.training and all(p.grad is None for p in backbone.parameters())
    assert parent[1].weight.grad is not None
    assert all(torch.equal(before[k], v) for k, v in backbone.state_dict().items())


def load_resnet(tmp_path: Path) -> Backbone:
    torch.save(ResNet18().state_dict(), tmp_path / "resnet.pth")
    return load_backbone(tmp_path / "resnet.pth", size=32)


# ---------------------------------------------------------------------------------------------- transfer into RL
def train_cfg(run_dir: Path, backbone: Path, *extra: str) -> config_lib.TrainConfig:
    return config_lib.parse_overrides([
        f"env={ENV}", f"size={SIZE}", f"encoder=pretrained:{backbone}", "frames=2000", "seed_frames=1000",
        "agent.batch_size=16", "agent.hidden_dim=32", "eval_episodes=1", "eval_every=100000",
        "agent.update_every=4", "replay_capacity=1000", "progress=false", f"run_dir={run_dir}", *extra])


@pytest.mark.slow
def test_train_with_frozen_and_finetuned_backbone(backbone_dir: Path, tmp_path: Path) -> None:
    assert config_lib.parse_overrides([f"encoder=pretrained:{backbone_dir}"]).encoder.pretrained == str(backbone_dir)
    with pytest.raises(ConfigError, match="encoder.freeze=true needs a pretrained backbone"):
        config_lib.parse_overrides(["encoder.freeze=true"])
    original = load_backbone(backbone_dir).state_dict()

    frozen = Trainer(train_cfg(tmp_path / "frozen", backbone_dir, "encoder.freeze=true"))
    critic_before = [p.clone() for p in frozen.agent.critic.parameters()]
    frozen.train()
    assert all(torch.equal(original[k], v) for k, v in frozen.agent.encoder.state_dict().items())
    assert any(not torch.equal(a, b) for a, b in zip(critic_before, frozen.agent.critic.parameters()))
    assert len(frozen.agent.critic_opt.param_groups) == 1  # the encoder is not even in the optimizer

    tuned = Trainer(train_cfg(tmp_path / "tuned", backbone_dir, "encoder.lr_scale=0.1"))
    groups = tuned.agent.critic_opt.param_groups
    assert groups[1]["lr"] == pytest.approx(0.1 * groups[0]["lr"])
    tuned.train()
    assert any(not torch.equal(original[k], v) for k, v in tuned.agent.encoder.state_dict().items())

    with pytest.raises(BackboneError, match=r"uint8\[9, 40, 40\].*takes uint8\[9, 32, 32\]"):
        Trainer(train_cfg(tmp_path / "wrong", backbone_dir, "size=40"))


@pytest.mark.slow
def test_export_run_and_collect_with_checkpoint_policy(backbone_dir: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    Trainer(train_cfg(run_dir, backbone_dir, "encoder.freeze=true")).train()
    exported = export_run(run_dir, tmp_path / "exported")
    assert exported["episodes"] == 2 and exported["observation"] == {"obs": f"uint8[9, {SIZE}, {SIZE}]"}
    assert Dataset(tmp_path / "exported").sample(4)["obs"].shape == (4, 9, SIZE, SIZE)
    assert main(["collect", f"policy=checkpoint:{run_dir}", "frames=1000", f"out={tmp_path / 'agent'}",
                 "progress=false"]) == 0
    assert info(tmp_path / "agent")["episodes"] == 1 and info(tmp_path / "agent")["tasks"] == [ENV]
    assert main(["collect", f"env={ENV}", "frames=10", f"out={tmp_path / 'agent'}"]) == 2  # not empty: refused


# ---------------------------------------------------------------------------------------------- SB3
@pytest.mark.slow
def test_sb3_extractor_frozen_and_trainable(backbone_dir: Path) -> None:
    sb3 = pytest.importorskip("stable_baselines3", reason="stable-baselines3 not installed (pip install 'ssrl[sb3]')")
    from ssrl.envs import make
    from ssrl.integrations.sb3 import BackboneExtractor, policy_kwargs

    original = load_backbone(backbone_dir).state_dict()
    for freeze in (True, False):
        env = make(ENV, size=SIZE, frame_stack=3, seed=0)
        model = sb3.SAC("CnnPolicy", env, buffer_size=200, learning_starts=20, batch_size=8, seed=0,
                        policy_kwargs=policy_kwargs(backbone_dir, freeze=freeze, net_arch=[32, 32]))
        extractor = model.policy.actor.features_extractor
        assert isinstance(extractor, BackboneExtractor) and not model.policy.normalize_images
        with torch.no_grad():  # SB3 hands the extractor uint8-range floats: identical to the raw backbone
            obs = torch.as_tensor(env.observation_space.sample()[None])
            features = model.policy.actor.extract_features(obs, extractor)
            assert torch.equal(features, load_backbone(backbone_dir)(obs))
        actor_before = [p.clone() for p in model.policy.actor.mu.parameters()]
        model.learn(60)
        env.close()
        same = [torch.equal(original[k], v) for k, v in model.policy.critic.features_extractor.backbone.state_dict().items()]
        assert all(same) if freeze else not all(same)
        assert any(not torch.equal(a, b) for a, b in zip(actor_before, model.policy.actor.mu.parameters()))


# ---------------------------------------------------------------------------------------------- MetaWorld + BC
def test_metaworld_adapter_scripted_reach_succeeds_and_renders() -> None:
    pytest.importorskip("metaworld", reason=f"metaworld not installed: {METAWORLD_INSTALL}")
    from ssrl.envs import make

    env = make("mw/reach-v3", obs="pixels+state", size=SIZE, frame_stack=1)
    weld = env.unwrapped.model.eq_data[0]
    obs, info = env.reset(seed=3)
    assert weld.size > 11 and weld[6] == -1.0 and weld[10] == 5.0  # metaworld's 11 values, the 12th kept
    assert obs["pixels"].shape == (3, SIZE, SIZE) and obs["pixels"].std() > 10  # a real image
    assert info["physics_state"].shape == (env.unwrapped.model.nq + env.unwrapped.model.nv,) and not info["success"]
    success = False
    for _ in range(100):
        obs, _, _, _, info = env.step(env.unwrapped.expert_action())
        success |= info["success"]
    env.close()
    assert success


@pytest.mark.slow
def test_behaviour_cloning_loss_falls_and_reaches(tmp_path: Path) -> None:
    pytest.importorskip("metaworld", reason=f"metaworld not installed: {METAWORLD_INSTALL}")
    from ssrl.experiments.transfer import parse as transfer_parse
    from ssrl.experiments.transfer import run

    rows = run(transfer_parse(["tasks=reach-v3", "demos=5", "seeds=1", "rollouts=4", "steps=150", "batch_size=32",
                               f"size={SIZE}", "horizon=60", f"out={tmp_path}", "progress=false"]))
    (row,) = rows
    assert row["demo_expert_success"] == 1.0
    assert row["bc_loss_last"] < 0.5 * row["bc_loss_first"]
    assert row["successes"] > 0
    assert json.loads((tmp_path / "results.json").read_text())["rows"] == rows


def test_transfer_keeps_every_row_resumes_after_a_stop_and_locks_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                       capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("metaworld", reason=f"metaworld not installed: {METAWORLD_INSTALL}")
    import fcntl

    from ssrl.experiments import transfer

    out = tmp_path / "bc"
    args = ["tasks=reach-v3", "demos=1,2", "seeds=1", "rollouts=1", "steps=3", "batch_size=8", f"size={SIZE}",
            "horizon=12", f"out={out}", "progress=false"]
    trained, real, stop = [], transfer.train_bc, [True]

    def train_bc(cfg: transfer.TransferConfig, demos: Path, seed: int, device: torch.device):
        trained.append((cfg.backbone, cfg.steps, demos.name))
        if stop[0] and len(trained) == 2:
            raise KeyboardInterrupt  # stopped during the second row
        return real(cfg, demos, seed, device)

    monkeypatch.setattr(transfer, "train_bc", train_bc)

    def saved() -> list[dict]:
        return json.loads((out / "results.json").read_text())["rows"]

    with pytest.raises(KeyboardInterrupt):
        transfer.run(transfer.parse(["backbone=random", *args]))
    (first,) = saved()  # the finished row was written before the stop
    assert (first["backbone"], first["demos"]) == ("random", 1)
    stop[0] = False
    rows = transfer.run(transfer.parse(["backbone=random", *args]))  # resumes: only the second row trains
    assert trained[2:] == [("random", 3, "n2")] and rows[0] == first and [r["demos"] for r in rows] == [1, 2]
    transfer.run(transfer.parse(["backbone=scratch", *args, "demos=1"]))  # another backbone adds its row
    transfer.run(transfer.parse(["backbone=random", *args, "demos=1", "steps=4"]))  # other settings: trained anew
    assert trained[3:] == [("scratch", 3, "n1"), ("random", 4, "n1")]
    assert [(r["backbone"], r["demos"], r["settings"]["steps"]) for r in saved()] == [
        ("random", 1, 3), ("random", 2, 3), ("scratch", 1, 3), ("random", 1, 4)]
    assert (out / "results.md").read_text().count("| reach-v3 |") == 4

    capsys.readouterr()
    with open(out / ".lock") as held:  # another process holds out
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert main(["transfer", "backbone=random", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"ssrl transfer: error: out={out} is in use by") and "\n" not in err
    (tmp_path / "file").write_text("")
    assert main(["transfer", "backbone=random", *args, f"out={tmp_path / 'file' / 'bc'}"]) == 2
    assert "is a file" in capsys.readouterr().err and len(trained) == 5  # refused before anything ran


def test_transfers_sharing_demos_dir_take_turns_recording_demonstrations(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("metaworld", reason=f"metaworld not installed: {METAWORLD_INSTALL}")
    import fcntl
    import threading

    from ssrl.data.dataset import episode_files
    from ssrl.experiments import transfer

    cfg = transfer.parse(["tasks=reach-v3", "demos=2", f"size={SIZE}", "horizon=12", f"demos_dir={tmp_path / 'demos'}",
                          f"out={tmp_path / 'bc'}", "progress=false"])
    root = tmp_path / "demos" / f"reach-v3-{SIZE}px-fs{cfg.frame_stack}-h12"
    root.mkdir(parents=True)
    started, real = threading.Event(), transfer.make_task_env
    monkeypatch.setattr(transfer, "make_task_env", lambda *a: started.set() or real(*a))
    result: dict[str, Path] = {}
    worker = threading.Thread(target=lambda: result.update(path=transfer.demonstrations(cfg, "reach-v3", 2)))
    with open(root / ".lock", "a") as held:  # another process is recording this task
        fcntl.flock(held, fcntl.LOCK_EX)
        worker.start()
        assert not started.wait(2.0)  # it waits instead of recording beside the other process
    worker.join()
    assert started.is_set() and len(episode_files(result["path"])) == 2 and result["path"].name == "n2"


def test_transfer_labels_name_the_mode_and_a_non_default_encoder_lr(backbone_dir: Path) -> None:
    from ssrl.experiments.transfer import parse as transfer_parse

    def label(*extra: str) -> str:
        return transfer_parse([f"backbone={backbone_dir}", f"size={SIZE}", "frame_stack=3", *extra]).label()

    name = backbone_dir.name
    assert label() == f"{name} (frozen)" and label("freeze=false") == f"{name} (fine-tuned)"
    assert label("freeze=false", "encoder_lr_scale=1") == f"{name} (fine-tuned, encoder lr x1)"
    assert transfer_parse(["backbone=scratch"]).label() == "scratch"


def test_frozen_bc_trains_its_head_on_cached_features_of_every_demo_step(dataset: Path) -> None:
    from ssrl.data import to_torch
    from ssrl.experiments.transfer import BCPolicy, cached_loss, demo_steps, encode_views, make_backbone
    from ssrl.experiments.transfer import parse as transfer_parse
    from ssrl.nn.augment import Augment

    pixels, state, action = demo_steps(dataset)
    expected: dict[str, list[np.ndarray]] = {"pixels": [], "state": [], "action": []}
    for file in sorted(dataset.glob("*.npz")):  # a plain loop: observation t with the action taken at t
        z = np.load(file)
        frames = z["obs/pixels"]
        for t in range(len(z["action"])):
            expected["pixels"].append(np.concatenate([frames[max(0, t - 2)], frames[max(0, t - 1)], frames[t]]))
            expected["state"].append(z["obs/state"][t])
            expected["action"].append(z["action"][t])
    assert np.array_equal(pixels, np.stack(expected["pixels"]))
    assert np.array_equal(state, np.stack(expected["state"])) and np.array_equal(action, np.stack(expected["action"]))

    cfg = transfer_parse(["backbone=random", f"size={SIZE}", "frame_stack=3"])
    space = Dataset(dataset, seed=0).observation_space["pixels"]
    torch.manual_seed(0)
    policy = BCPolicy(make_backbone(cfg, space), Augment("shift", space), 4, action.shape[1], 32)
    views = encode_views(policy, pixels[:16], 3, torch.device("cpu"))
    with torch.no_grad():
        assert torch.allclose(views[:, 0], policy.backbone(to_torch(pixels[:16], "cpu")))  # view 0: the eval view
    assert not torch.allclose(views[:, 1], views[:, 0])  # the others are shifted
    # with one view, the cached loss is the end-to-end BC loss on unaugmented frames (sampled: 50k draws)
    loss = cached_loss(policy, dataset, 1, 0, 50_000, torch.device("cpu"))
    with torch.no_grad():
        exact = policy(to_torch(pixels, "cpu"), to_torch(state, "cpu")) - to_torch(action, "cpu").clamp(-1, 1)
    value = loss()
    assert value.item() == pytest.approx(float(exact.pow(2).mean()), rel=0.03)
    backbone_before = [p.clone() for p in policy.backbone.parameters()]
    value.backward()
    assert all(p.grad is not None for p in policy.head.parameters())
    assert all(torch.equal(a, b) for a, b in zip(backbone_before, policy.backbone.parameters()))


def test_spatial_softmax_is_each_maps_expected_position() -> None:
    from ssrl.nn.heads import SpatialSoftmax

    torch.manual_seed(0)
    head, maps = SpatialSoftmax(3, keypoints=2), torch.randn(2, 3, 4, 5)
    out = head(maps).detach().numpy()
    w, b = head.conv.weight[:, :, 0, 0].detach().numpy(), head.conv.bias.detach().numpy()
    for n in range(2):  # a plain loop: softmax over the 20 positions of each 1x1-conv map, expected (x, y)
        for k in range(2):
            logits = np.einsum("c,chw->hw", w[k], maps[n].numpy()) + b[k]
            p = np.exp(logits - logits.max())
            p /= p.sum()
            rows, cols = np.meshgrid(np.arange(4), np.arange(5), indexing="ij")
            x, y = (p * (-1 + 2 * cols / 4)).sum(), (p * (-1 + 2 * rows / 3)).sum()
            assert out[n, 2 * k] == pytest.approx(x, abs=1e-5) and out[n, 2 * k + 1] == pytest.approx(y, abs=1e-5)
    one = SpatialSoftmax(1, keypoints=1)
    with torch.no_grad():
        one.conv.weight.fill_(1.0), one.conv.bias.zero_()
    hot = torch.zeros(1, 1, 4, 5)
    hot[0, 0, 1, 4] = 100.0  # row 1 of 4, last column: x = 1, y = -1 + 2/3
    assert one(hot)[0].tolist() == pytest.approx([1.0, -1 / 3], abs=1e-6)


@pytest.mark.parametrize("readout", ["keypoints", "projection"])
def test_readouts_train_on_the_frozen_backbones_conv_maps(dataset: Path, readout: str) -> None:
    from ssrl.data import to_torch
    from ssrl.experiments.transfer import BCPolicy, cached_loss, demo_steps, encode_views, make_backbone
    from ssrl.experiments.transfer import parse as transfer_parse
    from ssrl.nn.augment import Augment

    pixels, _, action = demo_steps(dataset)
    cfg = transfer_parse(["backbone=random", f"size={SIZE}", "frame_stack=3", f"readout={readout}"])
    assert cfg.label() == f"random + {readout}"
    space = Dataset(dataset, seed=0).observation_space["pixels"]
    torch.manual_seed(0)
    policy = BCPolicy(make_backbone(cfg, space), Augment("shift", space), 4, action.shape[1], 32, readout)
    views = encode_views(policy, pixels[:8], 2, torch.device("cpu"))
    assert views.shape == (8, 2, 32, 9, 9)  # 32 px: the last conv maps (15, 13, 11, 9 px), not the features
    with torch.no_grad():  # the maps are what the encoder's own head projects to its features
        assert torch.allclose(policy.backbone.net.head(views[:, 0].flatten(1)),
                              policy.backbone(to_torch(pixels[:8], "cpu")), atol=1e-6)
    before = [p.clone() for p in policy.backbone.parameters()]
    cached_loss(policy, dataset, 2, 0, 64, torch.device("cpu"))().backward()
    assert all(p.grad is not None for p in [*policy.readout.parameters(), *policy.head.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(before, policy.backbone.parameters()))
    with pytest.raises(ConfigError, match="readout='pooled'"):
        transfer_parse(["readout=pooled"])


# ------------------------------------------------------------------------------------------------- probes
def test_probe_data_from_a_dataset_stacks_frames_as_the_replay_does(dataset: Path) -> None:
    from ssrl.eval.probe import from_dataset

    data = from_dataset(str(dataset))
    files = sorted(dataset.glob("*.npz"))
    start = 0
    for episode, file in enumerate(files):
        z = np.load(file)
        frames, states = z["obs/pixels"], z["obs/state"]
        for t in range(len(frames)):  # a plain loop: frames t-2, t-1, t, the first frame repeated before the start
            expected = np.concatenate([frames[max(0, t - 2)], frames[max(0, t - 1)], frames[t]])
            assert np.array_equal(data.obs[start + t], expected)
        assert np.array_equal(data.states[start : start + len(frames)], states)
        assert (data.episodes[start : start + len(frames)] == episode).all()
        start += len(frames)
    assert start == len(data.obs) == len(data.physics)
    # the replay stacks the same way: a sampled observation is one of these
    sample = data.replay.sample(4)["obs"]["pixels"]
    assert all((data.obs == s).all((1, 2, 3)).any() for s in sample)


def test_position_dims_follow_the_task_state_layout() -> None:
    from ssrl.eval.probe import position_dims

    assert position_dims("dmc/cartpole-swingup").tolist() == [True] * 3 + [False] * 2  # cart x, cos, sin | vels
    assert position_dims("dmc/finger-spin").tolist() == [True] * 4 + [False] * 5  # position | velocity, touch
    assert position_dims("dmc/reacher-easy").tolist() == [True] * 4 + [False] * 2  # position, to_target | vel


def test_pixel_state_reads_finger_spins_tip_as_its_frames_show_it(tmp_path: Path) -> None:
    """dm_control's own renderer: the spinner turned half a turn gives the same frame while its tip's (x, z) flips
    sign, so the raw tip is no function of the frames. pixel_state maps both to one target, the doubled angle
    computed by hand, keeps the joints, and from_dataset applies it to a finger-spin dataset only."""
    from dm_control import suite

    from ssrl.envs import make
    from ssrl.eval.probe import from_dataset, pixel_state

    env = suite.load("finger", "spin", task_kwargs={"random": 0})
    env.reset()
    physics, rows, frames = env.physics, [], []
    for angle in (0.3, 0.3 + np.pi, 1.1):
        with physics.reset_context():
            physics.named.data.qpos["hinge"] = angle
        rows.append(np.concatenate([env.task.get_observation(physics)["position"], np.zeros(5)]))
        frames.append(physics.render(32, 32, camera_id=0))
    assert np.array_equal(frames[0], frames[1]) and not np.array_equal(frames[0], frames[2])
    assert np.allclose(rows[0][2:4], -rows[1][2:4]) and not np.allclose(rows[0][2:4], 0)
    out = pixel_state("dmc/finger-spin", np.array(rows))
    np.testing.assert_allclose(out[0], out[1])
    angle = np.arctan2(rows[0][3], rows[0][2])
    np.testing.assert_allclose(out[0, 2:4], [np.cos(2 * angle), np.sin(2 * angle)])
    np.testing.assert_array_equal(np.delete(out, [2, 3], 1), np.delete(np.array(rows), [2, 3], 1))
    assert not np.allclose(out[0, 2:4], out[2, 2:4])
    np.testing.assert_array_equal(pixel_state("dmc/cartpole-swingup", np.array(rows)), np.array(rows))
    # ssrl's finger-spin state holds the tip about the hinge at entries 2-3, and from_dataset reads it doubled
    ssrl_env = make("dmc/finger-spin", obs="state")
    state, _ = ssrl_env.reset(seed=0)
    sensors = ssrl_env.unwrapped.physics.named.data.sensordata
    np.testing.assert_allclose(state[2:4], sensors["tip"][[0, 2]] - sensors["spinner"][[0, 2]], atol=1e-6)
    ssrl_env.close()
    collect("dmc/finger-spin", "random", 40, tmp_path / "finger", size=16, frame_stack=1, progress=False)
    data = from_dataset(str(tmp_path / "finger"))
    raw = np.concatenate([np.load(f)["obs/state"] for f in sorted((tmp_path / "finger").glob("*.npz"))])
    np.testing.assert_allclose(data.states, pixel_state("dmc/finger-spin", raw))
    assert not np.allclose(data.states[:, 2:4], raw[:, 2:4])


def test_probe_scores_linear_matches_least_squares_and_the_mlp_fits_what_a_line_cannot() -> None:
    from ssrl.eval.probe import probe_scores

    rng = np.random.default_rng(0)
    n = 3000
    x = rng.normal(size=(n, 6))
    positions = x[:, :3] @ rng.normal(size=(3, 2)) + 0.1 * rng.normal(size=(n, 2))  # linear in the features
    bent = x[:, 3:4] * x[:, 4:5]  # a function of the features no line follows
    noise = rng.normal(size=(n, 1))  # a "velocity" the features do not hold
    states = np.hstack([positions, bent, noise])
    test = np.arange(n) % 2 == 1
    scores = probe_scores(x, states, test, np.array([True, True, False, False]))
    # reference: ordinary least squares with an intercept, R^2 per dimension averaged by hand
    a = np.hstack([x, np.ones((n, 1))])
    w, *_ = np.linalg.lstsq(a[~test], states[~test], rcond=None)
    residual = ((a[test] @ w - states[test]) ** 2).sum(0)
    r2 = 1 - residual / ((states[test] - states[test].mean(0)) ** 2).sum(0)
    assert scores["linear_r2_positions"] == pytest.approx(r2[:2].mean(), abs=2e-3)
    assert scores["linear_r2_all"] == pytest.approx(r2.mean(), abs=2e-3)
    assert scores["linear_r2_dims"] == pytest.approx(r2.tolist(), abs=2e-3)
    assert r2[2] < 0.1 and abs(r2[3]) < 0.02  # a line cannot follow the bent target, nothing follows the noise
    assert scores["mlp_r2_positions"] > 0.97
    assert scores["mlp_r2_all"] > (r2[:2].sum() + 0.8) / 4  # the MLP follows the bent target (R^2 > 0.8)
