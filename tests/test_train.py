"""The trainer: exact resume, SIGINT checkpoints, config errors, adapter mode, data parallel."""

import json
import math
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from _helpers import has_compiler

from astra_core.apps.cli import main
from astra_core.apps.train import Trainer, held_out_partners, held_out_picks, read_training_state
from astra_core.checkpoint import read_checkpoint, save_checkpoint
from astra_core.config import TrainConfig
from astra_core.data import collate
from astra_core.errors import CheckpointError, ConfigError
from astra_core.model.actions import AstraNet
from astra_core.world import WorldModel

BASE = {
    "model": {
        "dit": {
            "preset": "tiny",
            "dim": 32,
            "ffn_dim": 64,
            "num_heads": 2,
            "num_layers": 2,
            "in_dim": 48,
            "out_dim": 48,
        },
        "action": {"encoder": "moae", "modalities": ["camera_se3", "robot_ee"], "token_dim": 16, "expert_hidden": 16},
        "history": {"chunk_size": 2, "window": 4},
    },
    "data": {
        "weights": {"free_camera": 1.0, "tabletop_arm": 1.0},
        "episodes_per_world": 2,
        "held_out_per_world": 1,
        "episode_frames": 9,
    },
    "optim": {"warmup_steps": 2},
    "steps": 6,
    "batch_size": 2,
    "eval_every": 3,
    "checkpoint_every": 2,
    "log_every": 1,
}


def _config(tmp_path: Path, name: str, **overrides) -> Path:
    data = json.loads(json.dumps(BASE))
    data.update(overrides)
    data["out_dir"] = str(tmp_path / name)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _weights(run: Path) -> dict:
    return read_training_state(run / "state.pt")["model"]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_resume_continues_exactly(tmp_path, precision):
    straight = TrainConfig.from_yaml(_config(tmp_path, "straight", precision=precision))
    Trainer(straight, progress=False).train()
    split = TrainConfig.from_yaml(_config(tmp_path, "split", precision=precision))
    first = Trainer(split, progress=False)
    for _ in range(3):
        first.train_step()
    first.save_state()  # the process dies here
    del first
    resumed = Trainer(split, resume=True, progress=False)
    assert resumed.step == 3
    resumed.train()
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "split")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    lines = [json.loads(x) for x in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2, 3, 4, 5, 6]
    assert (tmp_path / "split" / "model.safetensors").is_file()
    assert {"loss", "aux_loss", "router_usage", "tokens_per_s", "lr"} <= set(lines[0])
    assert "eval_loss" in lines[2] and "eval_action_gain" in lines[2]
    assert lines[0]["lr"] < lines[1]["lr"]  # warmup


def test_held_out_action_gain_tells_whether_actions_matter(tmp_path):
    data = {**BASE["data"], "held_out_per_world": 2}
    trainer = Trainer(TrainConfig.from_yaml(_config(tmp_path, "gain", data=data)), progress=False)
    fresh = trainer.evaluate()
    # The experts' output layers start at zero: shuffled actions cannot change the loss yet.
    assert fresh["eval_action_gain_per_embodiment"] == {"free_camera": 1.0, "tabletop_arm": 1.0}
    assert fresh["eval_action_gain_opening_per_embodiment"] == {"free_camera": 1.0, "tabletop_arm": 1.0}
    assert trainer.evaluate() == fresh  # fixed noise: comparable across steps
    torch.manual_seed(0)
    for expert in trainer.ema.moae.experts:
        torch.nn.init.normal_(expert.fc2.weight, std=0.5)
    live = trainer.evaluate()
    assert all(gain != 1.0 for gain in live["eval_action_gain_per_embodiment"].values())
    assert all(gain != 1.0 for gain in live["eval_action_gain_opening_per_embodiment"].values())
    assert live["eval_action_gain_opening"] != live["eval_action_gain"]  # another layout, other clips' frames
    assert live["eval_loss"] != fresh["eval_loss"]


def test_the_held_out_gain_gives_each_clip_another_episodes_actions():
    # The toy recipe's held-out pool: 4 episodes of 13 overlapping clips, listed episode by episode.
    # Neighbouring clips of an episode carry nearly the same actions, so pairing neighbours measured ~1.
    per_episode, episodes = 13, 4
    picks = held_out_picks(per_episode * episodes)
    partner = held_out_partners(len(picks))
    episode = [p // per_episode for p in picks]
    assert len(picks) == 16 and len(set(episode)) == episodes
    assert sorted(partner.tolist()) == list(range(16))  # every clip's actions are used once
    assert all(episode[i] != episode[j] for i, j in enumerate(partner.tolist()))
    assert held_out_picks(5) == [0, 1, 2, 3, 4] and held_out_partners(2).tolist() == [1, 0]


@pytest.mark.parametrize(
    "action",
    [
        {"router": "topk"},
        {"router": "soft"},  # the default router_options suit every router
        {"router": "fixed"},
        {"router": "shared"},
        {"encoder": "shared"},
        {"encoder": "mlp", "modalities": [], "action_dim": 12},
    ],
    ids=["moae-topk", "moae-soft", "moae-fixed", "moae-shared", "shared-encoder", "mlp"],
)
def test_bf16_training_steps_keep_fp32_master_weights(tmp_path, action):
    """bf16 autocast trains every action path the config can describe: finite losses, the weights and
    the optimiser state stay float32, and the weights move."""
    data = json.loads(json.dumps(BASE))
    data["model"]["action"].update(action)
    data.update(precision="bf16", steps=2, eval_every=0, checkpoint_every=0, out_dir=str(tmp_path / "bf16"))
    path = tmp_path / "bf16.yaml"
    path.write_text(yaml.safe_dump(data))
    trainer = Trainer(TrainConfig.from_yaml(path), progress=False)
    before = {k: v.clone() for k, v in trainer.net.state_dict().items()}
    losses = [trainer.train_step()["loss"] for _ in range(2)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert all(p.dtype == torch.float32 for p in trainer.net.parameters())
    moments = [t for st in trainer.opt.state.values() for t in st.values() if t.ndim > 0]
    assert moments and all(t.dtype == torch.float32 for t in moments)
    after = trainer.net.state_dict()
    assert not torch.equal(before["dit.blocks.0.self_attn.q.weight"], after["dit.blocks.0.self_attn.q.weight"])
    action_keys = [k for k in after if k.startswith(("moae.", "action_encoder.")) and after[k].dtype.is_floating_point]
    assert any(not torch.equal(before[k], after[k]) for k in action_keys)


def test_device_cuda_without_a_cuda_device_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = TrainConfig.from_yaml(_config(tmp_path, "cuda", steps=1, device="cuda"))
    with pytest.raises(ConfigError, match="device: 'cuda' asked for, but torch sees no CUDA device"):
        Trainer(cfg, progress=False)
    assert Trainer(TrainConfig.from_yaml(_config(tmp_path, "auto", steps=1)), progress=False).device.type == "cpu"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_training_on_cuda_keeps_fp32_master_weights_and_resumes(tmp_path, precision):
    """`device: auto` trains on the GPU: the weights, the EMA and the optimiser state live there in float32,
    the checkpoint loads on the CPU, and a resumed run continues from the saved step."""
    from astra_core import WorldModel

    cfg = TrainConfig.from_yaml(_config(tmp_path, precision, steps=3, precision=precision, checkpoint_every=2))
    trainer = Trainer(cfg, progress=False)
    assert trainer.device.type == "cuda"
    trainer.train()
    assert all(p.device.type == "cuda" and p.dtype == torch.float32 for p in trainer.net.parameters())
    moments = [t for st in trainer.opt.state.values() for t in st.values() if t.ndim > 0]
    assert moments and all(t.device.type == "cuda" and t.dtype == torch.float32 for t in moments)
    model = WorldModel.from_checkpoint(tmp_path / precision / "model.safetensors")
    assert next(model.net.parameters()).device.type == "cpu"
    longer = TrainConfig.from_dict({**cfg.model_dump(mode="json"), "steps": 4})
    resumed = Trainer(longer, resume=True, progress=False)
    assert resumed.step == 3
    assert math.isfinite(resumed.train_step()["loss"])


@pytest.mark.skipif(not has_compiler(), reason="torch.compile needs a C++ compiler")
def test_compiled_training_matches_eager_and_keeps_checkpoint_names(tmp_path):
    """`compile: true` compiles the DiT in place: the same losses as eager (to float rounding), and the
    checkpoint's parameter names unchanged, so it loads like any other."""
    from astra_core import WorldModel

    losses = {}
    for name, compiled in (("eager", False), ("compiled", True)):
        cfg = TrainConfig.from_yaml(
            _config(tmp_path, name, steps=2, eval_every=0, checkpoint_every=0, compile=compiled)
        )
        trainer = Trainer(cfg, progress=False)
        losses[name] = [trainer.train_step()["loss"] for _ in range(2)]
        trainer.save_state()
    assert losses["compiled"] == pytest.approx(losses["eager"], rel=1e-4)
    eager, compiled = (read_training_state(tmp_path / n / "state.pt")["model"] for n in ("eager", "compiled"))
    assert sorted(eager) == sorted(compiled)
    assert WorldModel.from_checkpoint(tmp_path / "compiled" / "model.safetensors").net is not None


class _RunsOnLoad:
    """A pickle payload that would create a file if it were unpickled with code execution allowed."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_resume_refuses_a_training_state_that_would_run_code(tmp_path):
    cfg = TrainConfig.from_yaml(_config(tmp_path, "crafted", steps=2))
    Trainer(cfg, progress=False).train()
    state_path = tmp_path / "crafted" / "state.pt"
    marker = tmp_path / "code-ran"
    state = read_training_state(state_path)
    state["sampler"] = _RunsOnLoad(marker)
    torch.save(state, state_path)
    with pytest.raises(CheckpointError, match=r"state\.pt.*refused unread"):
        Trainer(cfg, resume=True, progress=False)
    assert not marker.exists()
    state_path.write_bytes(state_path.read_bytes()[:100])  # truncated: one clear error too
    with pytest.raises(CheckpointError, match="cannot be read as a training state"):
        Trainer(cfg, resume=True, progress=False)


def test_sigint_saves_a_checkpoint_and_resume_finishes_identically(tmp_path):
    cfg = _config(tmp_path, "interrupted", steps=100, checkpoint_every=0, eval_every=0)
    # the subprocess computes with as many threads as this process (tests/_helpers sets them), whatever
    # OMP_NUM_THREADS says: a different thread count sums in another order, and the weights then differ
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.Popen(
        [sys.executable, "-m", "astra_core.apps.cli", "train", str(cfg)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    metrics = tmp_path / "interrupted" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 3):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=120)
    assert proc.returncode == 0
    stopped_at = read_training_state(tmp_path / "interrupted" / "state.pt")["step"]
    assert 3 <= stopped_at < 100
    assert main(["train", str(cfg), "--resume"]) == 0
    straight = _config(tmp_path, "straight", steps=100, checkpoint_every=0, eval_every=0)
    assert main(["train", str(straight)]) == 0
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "interrupted")
    diff = {k: float((a[k].float() - b[k].float()).abs().max()) for k in a if not torch.equal(a[k], b[k])}
    assert not diff, (stopped_at, sorted(diff.items(), key=lambda kv: -kv[1])[:5], len(diff))


def test_a_config_typo_fails_before_any_work(tmp_path):
    path = _config(tmp_path, "typo")
    text = path.read_text().replace("batch_size", "batch_sise")
    path.write_text(text)
    with pytest.raises(ConfigError, match="batch_sise"):
        TrainConfig.from_yaml(path)
    assert main(["train", str(path)]) == 2
    assert not (tmp_path / "typo").exists()


def test_adapter_mode_trains_only_the_adapter(tmp_path):
    cfg = TrainConfig.from_yaml(_config(tmp_path, "scratch"))
    pretrained = AstraNet(cfg.model)
    init = save_checkpoint(tmp_path / "pretrained.safetensors", pretrained)
    adapter = TrainConfig.from_yaml(_config(tmp_path, "adapter", mode="adapter", init_checkpoint=str(init), steps=3))
    trainer = Trainer(adapter, progress=False)
    trainer.train()
    after = trainer.net.state_dict()
    before = pretrained.state_dict()
    assert torch.equal(after["dit.blocks.0.ffn.0.weight"], before["dit.blocks.0.ffn.0.weight"])
    assert torch.equal(after["dit.head.head.weight"], before["dit.head.head.weight"])
    assert not torch.equal(after["dit.blocks.0.self_attn.q.weight"], before["dit.blocks.0.self_attn.q.weight"])


def test_adapter_fine_tuning_in_bf16_keeps_the_backbone_and_fp32_weights(tmp_path):
    cfg = TrainConfig.from_yaml(_config(tmp_path, "scratch"))
    pretrained = AstraNet(cfg.model)
    init = save_checkpoint(tmp_path / "pretrained.safetensors", pretrained)
    adapter = _config(tmp_path, "adapter", mode="adapter", init_checkpoint=str(init), steps=2, precision="bf16")
    trainer = Trainer(TrainConfig.from_yaml(adapter), progress=False)
    losses = [trainer.train_step()["loss"] for _ in range(2)]
    assert all(math.isfinite(x) for x in losses)
    assert all(p.dtype == torch.float32 for p in trainer.net.parameters())
    after, before = trainer.net.state_dict(), pretrained.state_dict()
    assert torch.equal(after["dit.blocks.0.ffn.0.weight"], before["dit.blocks.0.ffn.0.weight"])
    assert not torch.equal(after["dit.blocks.0.self_attn.q.weight"], before["dit.blocks.0.self_attn.q.weight"])


def test_finetune_mode_starts_from_every_weight_and_trains_them_all(tmp_path):
    cfg = TrainConfig.from_yaml(_config(tmp_path, "scratch"))
    torch.manual_seed(5)
    pretrained = AstraNet(cfg.model)
    with torch.no_grad():  # weights a fresh network would not have: the head and the action path
        for p in pretrained.parameters():
            p.add_(0.01 * torch.randn_like(p))
    for normalizer in pretrained.moae.normalizers.values():  # statistics the training data would not give
        normalizer.fit(3.0 + 2.0 * torch.randn(16, normalizer.dim))
    init = save_checkpoint(tmp_path / "pretrained.safetensors", pretrained)
    tuned = TrainConfig.from_yaml(_config(tmp_path, "tuned", mode="finetune", init_checkpoint=str(init), steps=3))
    trainer = Trainer(tuned, progress=False)
    before = pretrained.state_dict()
    start = trainer.net.state_dict()
    assert all(torch.equal(start[k], v) for k, v in before.items())  # every weight, buffers included
    assert trainer.net.moae.normalizers["camera_se3"].fitted  # kept from the checkpoint, not fitted again
    trainer.train()
    after = trainer.net.state_dict()
    for name in ("dit.blocks.0.ffn.0.weight", "dit.head.head.weight", "dit.blocks.0.self_attn.q.weight"):
        assert not torch.equal(after[name], before[name]), name
    # the run's checkpoint keeps the config of the run (here the same architecture)
    assert WorldModel.from_checkpoint(tmp_path / "tuned" / "model.safetensors").frames_per_step == 2


@pytest.mark.parametrize("mode", ["finetune", "adapter"])
def test_a_run_from_a_checkpoint_resumes_from_its_state_without_its_init_checkpoint(tmp_path, mode):
    """Resuming, the weights come from state.pt: the checkpoint the run started from is not read again
    (it may have been retrained or removed since), and the run ends as the uninterrupted one does (in
    adapter mode with the backbone still frozen)."""
    cfg = TrainConfig.from_yaml(_config(tmp_path, "scratch"))
    torch.manual_seed(5)
    pretrained = AstraNet(cfg.model)
    with torch.no_grad():
        for p in pretrained.parameters():
            p.add_(0.01 * torch.randn_like(p))
    init = save_checkpoint(tmp_path / "pretrained.safetensors", pretrained)
    straight = TrainConfig.from_yaml(_config(tmp_path, "straight", mode=mode, init_checkpoint=str(init)))
    Trainer(straight, progress=False).train()
    split = TrainConfig.from_yaml(_config(tmp_path, "split", mode=mode, init_checkpoint=str(init)))
    first = Trainer(split, progress=False)
    for _ in range(3):
        first.train_step()
    first.save_state()
    del first
    init.unlink()
    resumed = Trainer(split, resume=True, progress=False)
    assert resumed.step == 3
    resumed.train()
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "split")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    frozen = "dit.blocks.0.ffn.0.weight"
    assert torch.equal(b[frozen], pretrained.state_dict()[frozen]) == (mode == "adapter")


def test_finetune_mode_refuses_a_checkpoint_of_another_architecture(tmp_path):
    other = json.loads(json.dumps(BASE))
    other["model"]["dit"]["num_layers"] = 1
    path = tmp_path / "other.yaml"
    path.write_text(yaml.safe_dump({**other, "out_dir": str(tmp_path / "other")}))
    init = save_checkpoint(tmp_path / "small.safetensors", AstraNet(TrainConfig.from_yaml(path).model))
    tuned = TrainConfig.from_yaml(_config(tmp_path, "tuned", mode="finetune", init_checkpoint=str(init)))
    with pytest.raises(CheckpointError, match=r"small\.safetensors.*missing: dit\.blocks\.1\."):
        Trainer(tuned, progress=False)
    assert not (tmp_path / "tuned" / "state.pt").exists()


def test_finetune_and_adapter_refuse_a_checkpoint_trained_on_another_tokenizer(tmp_path):
    """The network generates its tokenizer's latents: a checkpoint trained on other latents (another kind
    of tokenizer, or the same kind with other weights) is refused, naming the file, before any state."""
    from astra_core.data.tokenizer import CausalVideoVAE
    from astra_core.data.tokenizer_train import save_tokenizer

    cfg = TrainConfig.from_yaml(_config(tmp_path, "scratch"))
    torch.manual_seed(0)
    vae_a, vae_b = (CausalVideoVAE(channels=48, width=16, temporal_factor=1) for _ in range(2))
    net = AstraNet(cfg.model)
    on_vae = save_checkpoint(tmp_path / "on_vae.safetensors", net, tokenizer=vae_b)
    for mode in ("finetune", "adapter"):  # the run's tokenizer is the pixel one, the checkpoint's a VAE
        run = TrainConfig.from_yaml(_config(tmp_path, f"pixel_{mode}", mode=mode, init_checkpoint=str(on_vae)))
        with pytest.raises(CheckpointError, match=r"on_vae\.safetensors.*causal_vae.*'pixel'"):
            Trainer(run, progress=False)
        assert not (tmp_path / f"pixel_{mode}" / "state.pt").exists()
    vae_file = save_tokenizer(tmp_path / "vae_a.safetensors", vae_a)  # the same settings, other weights
    data = {**BASE["data"], "tokenizer": str(vae_file)}
    run = TrainConfig.from_yaml(_config(tmp_path, "vae_a", mode="finetune", init_checkpoint=str(on_vae), data=data))
    with pytest.raises(CheckpointError, match=r"on_vae\.safetensors.*other weights"):
        Trainer(run, progress=False)
    # the checkpoint's own tokenizer passes the check (and the weights load)
    same = save_checkpoint(tmp_path / "on_vae_a.safetensors", net, tokenizer=vae_a)
    run = TrainConfig.from_yaml(_config(tmp_path, "vae_ok", mode="finetune", init_checkpoint=str(same), data=data))
    start = Trainer(run, progress=False).net.state_dict()
    assert all(torch.equal(start[k], v) for k, v in net.state_dict().items() if k.startswith("dit."))


def test_info_reports_training_provenance(tmp_path, capsys):
    cfg = TrainConfig.from_yaml(_config(tmp_path, "info", steps=2))
    Trainer(cfg, progress=False).train()
    assert main(["info", str(tmp_path / "info" / "model.safetensors")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["extra_metadata"]["train_step"] == "2" and info["tokenizer"]["kind"] == "pixel"
    assert info["config"]["action"]["modalities"] == ["camera_se3", "robot_ee"]
    extra = info["extra_metadata"]
    assert int(extra["train_seconds"]) >= 0 and int(extra["train_cpu_seconds"]) >= 0


def test_training_time_in_wall_and_cpu_seconds_carries_over_resume(tmp_path, monkeypatch):
    path = _config(tmp_path, "timed", steps=2, checkpoint_every=0, eval_every=0)
    trainer = Trainer(TrainConfig.from_yaml(path), progress=False)
    trainer.train()
    state = read_training_state(tmp_path / "timed" / "state.pt")
    assert 0 < state["cpu_s"] and 0 < state["elapsed_s"]
    # CPU seconds are the process's, not the wall clock's: a resumed segment that sleeps adds wall
    # time but (almost) no CPU time.
    longer = TrainConfig.from_yaml(path).model_copy(update={"steps": 3})
    resumed = Trainer(longer, resume=True, progress=False)
    time.sleep(1.0)
    resumed.train()
    after = read_training_state(tmp_path / "timed" / "state.pt")
    assert after["elapsed_s"] >= state["elapsed_s"] + 1.0
    assert 0 < after["cpu_s"] - state["cpu_s"] < after["elapsed_s"] - state["elapsed_s"] - 0.5
    # A state written by an earlier version holds no CPU seconds: the checkpoint then claims none.
    old = {k: v for k, v in after.items() if k != "cpu_s"}
    monkeypatch.setattr("astra_core.apps.train_state.read_training_state", lambda _path: old)
    again = Trainer(longer.model_copy(update={"steps": 4}), resume=True, progress=False)
    assert again.cpu_elapsed() is None and "train_cpu_seconds" not in again._provenance()
    assert float(again._provenance()["train_seconds"]) >= after["elapsed_s"] - 1


def _torchrun(port: int, *args: str) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port), *args]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]


def test_fsdp2_resume_continues_exactly(tmp_path):
    """Two FSDP ranks: 4 steps straight equal 2 steps, a stop, and 2 more after --resume."""
    sharded = {"parallel": "fsdp", "steps": 4, "eval_every": 0, "checkpoint_every": 0}
    straight = _config(tmp_path, "straight", **sharded)
    split = _config(tmp_path, "split", **sharded)
    _torchrun(29521, "-m", "astra_core.apps.cli", "train", str(straight))
    stop_early = tmp_path / "two_steps.py"
    stop_early.write_text(
        "import gc, sys\n"
        "from astra_core.config import TrainConfig\n"
        "from astra_core.apps.train import Trainer\n"
        "from astra_core.apps.train_setup import shutdown_distributed\n"
        "trainer = Trainer(TrainConfig.from_yaml(sys.argv[1]), progress=False)\n"
        "trainer.train_step()\n"
        "trainer.train_step()\n"
        "trainer.save_state()  # the run stops here\n"
        "del trainer\n"
        "gc.collect()\n"
        "shutdown_distributed()\n"
    )
    _torchrun(29523, str(stop_early), str(split))
    assert read_training_state(tmp_path / "split" / "state.pt")["step"] == 2
    _torchrun(29525, "-m", "astra_core.apps.cli", "train", str(split), "--resume")
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "split")
    assert a.keys() == b.keys()
    diff = {k: float((a[k].float() - b[k].float()).abs().max()) for k in a}
    worst = sorted(diff.items(), key=lambda kv: -kv[1])[:3]
    assert worst[0][1] < 1e-6, worst
    # A sharded state is resumed sharded: one process refuses it, naming the file.
    with pytest.raises(ConfigError, match="was saved with parallel 'fsdp'"):
        Trainer(TrainConfig.from_yaml(split), resume=True, progress=False)


def _single_vs_torchrun(tmp_path, name: str, port: int, one_overrides: dict | None = None, **parallel) -> float:
    """Largest weight difference after 2 steps: one process with batch 4 vs two ranks with batch 2 each.

    The router's load-balancing loss is computed on each rank's own tokens (as MoE trainers do), which
    is not linear in the batch; it is switched off here so that the comparison is exact."""
    model = json.loads(json.dumps(BASE["model"]))
    model["action"]["aux_loss_weight"] = 0.0
    one = _config(tmp_path, "one", steps=2, batch_size=4, eval_every=0, model=model, **(one_overrides or {}))
    two = _config(tmp_path, name, steps=2, batch_size=2, eval_every=0, model=model, **parallel)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run(
        [sys.executable, "-m", "astra_core.apps.cli", "train", str(one)], check=True, env=env, capture_output=True
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            str(port),
            "-m",
            "astra_core.apps.cli",
            "train",
            str(two),
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    a, b = _weights(tmp_path / "one"), _weights(tmp_path / name)
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def test_two_processes_match_one_process_with_the_combined_batch(tmp_path):
    assert _single_vs_torchrun(tmp_path, "ddp", 29517) < 1e-5


def test_fsdp2_with_activation_checkpointing_matches_one_process(tmp_path):
    assert _single_vs_torchrun(tmp_path, "fsdp", 29519, parallel="fsdp", activation_checkpointing=True) < 1e-5


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_bf16_under_torchrun_matches_one_process_in_bf16(tmp_path, parallel):
    """bf16 autocast under DDP and FSDP2: two ranks land where one process with the combined batch does,
    to bf16's rounding (the matmuls of a rank see half the rows, so their bf16 results may round apart)."""
    port = 29527 if parallel == "ddp" else 29529
    one_process = {"precision": "bf16"}
    diff = _single_vs_torchrun(tmp_path, parallel, port, one_overrides=one_process, parallel=parallel, precision="bf16")
    assert diff < 2e-3


def test_short_history_clips_come_in_both_rollout_layouts(tmp_path):
    data = {**BASE["data"], "history_chunks": 2}
    trainer = Trainer(TrainConfig.from_yaml(_config(tmp_path, "layouts", data=data)), progress=False)
    full = collate(trainer.sampler.sample(2))
    assert full.latents.shape[2] == 7  # context + 2 history chunks + the target chunk
    opening, num_history, positions = trainer._crop(full, 1, opening=True)
    assert positions.tolist() == [0, 1, 2, 3, 4] and num_history == 3
    assert torch.equal(opening.latents, full.latents[:, :, :5])
    assert all(torch.equal(opening.masks[k], full.masks[k][:, :5]) for k in full.masks)  # every action kept
    gap, num_history, positions = trainer._crop(full, 1, opening=False)
    assert positions.tolist() == [0, 3, 4, 5, 6] and num_history == 3
    assert torch.equal(gap.latents[:, :, 1:], full.latents[:, :, 3:])
    for k in full.masks:  # the frame after the gap lost its predecessor: its action is masked
        assert gap.masks[k][:, 1].eq(0).all() and torch.equal(gap.masks[k][:, 2:], full.masks[k][:, 4:])


@pytest.mark.parametrize("prob", [0.0, 1.0])
def test_opening_prob_picks_the_layout_of_short_clips(tmp_path, prob):
    data = {**BASE["data"], "history_chunks": 2, "opening_prob": prob}
    trainer = Trainer(TrainConfig.from_yaml(_config(tmp_path, f"p{prob}", data=data)), progress=False)
    seen = []
    loss_module = trainer.loss_module

    def recording(batch, num_history, positions, *args):
        seen.append(positions.tolist())
        return loss_module(batch, num_history, positions, *args)

    trainer.loss_module = recording
    logs = [trainer.train_step() for _ in range(12)]
    short = [(x["opening"], pos) for x, pos in zip(logs, seen) if x["history_chunks"] < 2]
    assert short and all(o == (prob == 1.0) for o, _ in short)
    for opening, pos in short:  # what the model saw: contiguous from the start, or the context then a gap
        assert (pos == list(range(len(pos)))) == opening
    assert not any(x["opening"] for x in logs if x["history_chunks"] == 2)


def test_a_trainer_takes_the_config_as_a_dict_too(tmp_path):
    data = yaml.safe_load(_config(tmp_path, "as_dict", steps=1).read_text())
    trainer = Trainer(data, progress=False)
    assert trainer.cfg == TrainConfig.from_dict(data) and math.isfinite(trainer.train_step()["loss"])


def test_a_plugin_world_without_an_embodiment_trains_under_its_own_name(tmp_path):
    """`data.weights` may name a world a plugin registered with no `Embodiment` beside it."""
    import types

    from astra_embodiments.toy.worlds import TabletopArmWorld

    from astra_core import hookimpl
    from astra_core.plugins import plugins, reset_plugins

    class BareArm(TabletopArmWorld):
        name = "bare_arm"

    module = types.ModuleType("bare_arm_plugin")
    module.astra_register_worlds = hookimpl(lambda register: register(BareArm()))
    reset_plugins()
    try:
        plugins().register_plugin(module, "bare_arm")
        data = {**BASE["data"], "weights": {"bare_arm": 1.0}}
        trainer = Trainer(TrainConfig.from_yaml(_config(tmp_path, "bare", data=data, steps=1)), progress=False)
        assert set(trainer.pools) == {"bare_arm"} and trainer.pools["bare_arm"]
        assert math.isfinite(trainer.train_step()["loss"])
    finally:
        reset_plugins()


def test_data_phases_draw_their_own_mix_and_history_then_data_weights(tmp_path):
    phases = [{"steps": 3, "weights": {"tabletop_arm": 1.0}, "history_chunks": 0}]
    data = {**BASE["data"], "history_chunks": 2, "opening_prob": 0.0, "phases": phases}
    trainer = Trainer(TrainConfig.from_yaml(_config(tmp_path, "phased", data=data, steps=12)), progress=False)
    seen = []
    loss_module = trainer.loss_module

    def recording(batch, num_history, positions, *args):
        seen.append((sorted(set(batch.embodiments)), positions.tolist()))
        return loss_module(batch, num_history, positions, *args)

    trainer.loss_module = recording
    logs = [trainer.train_step() for _ in range(12)]
    for log, (worlds, pos) in zip(logs[:3], seen[:3]):  # the phase: arm clips, context + target, contiguous
        assert worlds == ["tabletop_arm"] and log["history_chunks"] == 0 and log["opening"]
        assert pos == [0, 1, 2]
    after = seen[3:]
    assert any("free_camera" in w for w, _ in after)  # data.weights again
    assert {x["history_chunks"] for x in logs[3:]} > {0}  # and data.history_chunks
    for log, (_, pos) in zip(logs[3:], after):  # a short clip after the phase keeps its gap (opening_prob 0)
        if log["history_chunks"] < 2:
            assert not log["opening"] and pos[1] > 1


def test_data_phases_resume_exactly_across_the_phase_boundary(tmp_path):
    phases = [{"steps": 2, "weights": {"tabletop_arm": 1.0}, "history_chunks": 0}]
    data = {**BASE["data"], "history_chunks": 2, "phases": phases}
    Trainer(TrainConfig.from_yaml(_config(tmp_path, "straight", data=data)), progress=False).train()
    split = TrainConfig.from_yaml(_config(tmp_path, "split", data=data))
    first = Trainer(split, progress=False)
    first.train_step()
    first.save_state()
    del first
    Trainer(split, resume=True, progress=False).train()
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "split")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_phase_at_walks_the_phases_then_the_data_weights(tmp_path):
    phases = [
        {"steps": 2, "weights": {"tabletop_arm": 1.0}, "history_chunks": 0},
        {"steps": 3, "weights": {"free_camera": 2.0}},
    ]
    cfg = TrainConfig.from_yaml(_config(tmp_path, "walk", data={**BASE["data"], "history_chunks": 2, "phases": phases}))
    assert cfg.phase_at(0) == cfg.phase_at(1) == ({"tabletop_arm": 1.0}, 0)
    assert cfg.phase_at(2) == cfg.phase_at(4) == ({"free_camera": 2.0}, 2)  # no cap: data.history_chunks
    assert cfg.phase_at(5) == (BASE["data"]["weights"], 2)


@pytest.mark.parametrize(
    "phases,steps,match",
    [
        ([{"steps": 2, "weights": {"car": 1.0}}], 6, r"phases\[0\]\.weights: \['car'\] not in data\.weights"),
        ([{"steps": 2, "weights": {"tabletop_arm": 1.0}, "history_chunks": 3}], 6, r"phases\[0\]\.history_chunks=3"),
        ([{"steps": 2, "weights": {"tabletop_arm": 0.0}}], 6, "at least one embodiment"),
        ([{"steps": 2, "weights": {"tabletop_arm": -1.0}}], 6, "non-negative"),
        ([{"steps": 0, "weights": {"tabletop_arm": 1.0}}], 6, "steps"),
        ([{"steps": 6, "weights": {"tabletop_arm": 1.0}}], 6, "data.phases cover 6 steps of a 6-step run"),
    ],
)
def test_bad_data_phases_fail_before_any_work_naming_the_field(tmp_path, phases, steps, match):
    data = {**BASE["data"], "history_chunks": 2, "phases": phases}
    with pytest.raises(ConfigError, match=match):
        TrainConfig.from_yaml(_config(tmp_path, "bad", data=data, steps=steps))


def test_opening_prob_outside_0_1_fails_naming_the_field(tmp_path):
    data = {**BASE["data"], "opening_prob": 1.5}
    with pytest.raises(ConfigError, match="data.opening_prob"):
        TrainConfig.from_yaml(_config(tmp_path, "bad", data=data))


def test_time_strides_add_faster_clips_of_the_same_episodes(tmp_path):
    from astra_core.apps.encode import encode_episode
    from astra_core.plugins import get_registry

    data = {**BASE["data"], "episode_frames": 13}
    plain = Trainer(TrainConfig.from_yaml(_config(tmp_path, "plain", data=data)), progress=False)
    strided = Trainer(
        TrainConfig.from_yaml(_config(tmp_path, "strided", data={**data, "time_strides": [1, 2]})), progress=False
    )
    for name in plain.pools:
        assert len(strided.pools[name]) > len(plain.pools[name])
        assert len(strided.held_out[name]) == len(plain.held_out[name])  # held out: the benchmark's frame rate

    registry = get_registry()
    for world_name, modality in (("free_camera", "camera_se3"), ("tabletop_arm", "robot_ee")):
        episode = registry.worlds[world_name].episode(3, 13)
        fast = encode_episode(episode, plain.tokenizer, registry.modalities, time_stride=2)
        expected = plain.tokenizer.encode(episode.frames[None, :, ::2].float())[0]
        assert torch.equal(torch.as_tensor(fast["latents"]), expected)
        # the vector of kept frame i covers raw rows 2i−1 and 2i: what alignment over 2 frames gives
        aligned = registry.modalities[modality].align(episode.actions[modality], 2)
        assert fast["actions"][modality].shape == (7, aligned.actions.shape[1])
        assert torch.allclose(torch.as_tensor(fast["actions"][modality]), torch.as_tensor(aligned.actions))
        slow = encode_episode(episode, plain.tokenizer, registry.modalities)
        assert not torch.allclose(
            torch.as_tensor(fast["actions"][modality][1:3]), torch.as_tensor(slow["actions"][modality][1:3])
        )
    # camera poses are absolute: every other pose, aligned frame to frame, is the same motion
    episode = registry.worlds["free_camera"].episode(3, 13)
    fast = encode_episode(episode, plain.tokenizer, registry.modalities, time_stride=2)
    every_other = registry.modalities["camera_se3"].align(episode.actions["camera_se3"][::2], 1)
    assert torch.allclose(
        torch.as_tensor(fast["actions"]["camera_se3"]), torch.as_tensor(every_other.actions), atol=1e-5
    )


@pytest.mark.parametrize(("strides", "field"), [([1, 3], "stride 3"), ([0], "time_strides")])
def test_time_strides_that_do_not_fit_fail_naming_the_field(tmp_path, strides, field):
    data = {**BASE["data"], "episode_frames": 13, "time_strides": strides}
    with pytest.raises(ConfigError, match=field):
        Trainer(TrainConfig.from_yaml(_config(tmp_path, "bad", data=data)), progress=False)


def test_delta_prediction_with_last_frame_channels_trains_and_evaluates(tmp_path):
    """The spatially conditioned recipe: the last history frame on extra input channels, the network
    predicting the change from it; it trains, its held-out evaluation runs, its checkpoint rolls out."""
    data = json.loads(json.dumps(BASE))
    data["model"]["dit"]["in_dim"] = 96
    data["model"]["history"]["last_frame_channels"] = True
    data["model"]["flow"] = {"prediction": "delta", "sigma_floor": 0.9}
    data.update(steps=3, eval_every=3, checkpoint_every=0, out_dir=str(tmp_path / "delta"))
    path = tmp_path / "delta.yaml"
    path.write_text(yaml.safe_dump(data))
    trainer = Trainer(TrainConfig.from_yaml(path), progress=False)
    logs = trainer.train()
    assert math.isfinite(logs["loss"]) and math.isfinite(logs["eval_loss"])
    assert trainer.net.dit.patch_embedding.weight.shape[1] == 96
    from astra_core.plugins import get_registry
    from astra_core.world import WorldModel

    wm = WorldModel.from_checkpoint(tmp_path / "delta" / "model.safetensors", num_steps=2)
    episode = get_registry().worlds["free_camera"].episode(0, 5)
    frames = wm.rollout(episode.frames[None, :, :1], [{"camera_se3": episode.actions["camera_se3"]}], 4)
    assert frames.shape == (1, 3, 4, 64, 64) and bool(torch.isfinite(frames).all())


@pytest.mark.parametrize(
    "path,value,field",
    [
        ("log_every", 0, "log_every"),
        ("checkpoint_every", -3, "checkpoint_every"),
        ("eval_every", -1, "eval_every"),
        ("seed", -1, "seed"),
        ("optim.lr", -1, "optim.lr"),
        ("optim.lr", float("nan"), "optim.lr"),
        ("optim.grad_clip", 0, "optim.grad_clip"),
        ("optim.ema_decay", 1.0, "optim.ema_decay"),
        ("optim.betas", [0.9, 1.5], "optim"),
        ("optim.warmup_steps", -5, "optim.warmup_steps"),
        ("data.weights", {"free_camera": -1.0, "tabletop_arm": 1.0}, "data"),
        ("data.weights", {"free_camera": 0.0, "tabletop_arm": 0.0}, "data"),
        ("data.clip_stride", 0, "data.clip_stride"),
        ("data.episodes_per_world", 0, "data.episodes_per_world"),
        ("model.action.aux_loss_weight", -0.1, "model"),
    ],
)
def test_out_of_range_settings_fail_before_any_work_naming_the_field(tmp_path, path, value, field):
    data = json.loads(json.dumps(BASE))
    node = data
    *parents, leaf = path.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=rf"bad\.yaml.*{field.split('.')[0]}"):
        TrainConfig.from_yaml(cfg)


def test_resume_after_a_crash_leaves_one_consistent_run(tmp_path):
    """A kill after step 5 whose state was saved at step 3: the steps logged since, the weights written
    since and a half-written temporary file are put right on --resume, and the run ends as one."""
    cfg = TrainConfig.from_yaml(_config(tmp_path, "crash", checkpoint_every=0, eval_every=0))
    run = tmp_path / "crash"
    first = Trainer(cfg, progress=False)
    for _ in range(3):
        first._log(first.train_step(), None)
    first.save_state()
    for _ in range(2):  # logged, and the weights written, but the state never saved
        first._log(first.train_step(), None)
    save_checkpoint(run / "model.safetensors", first.ema, first._provenance(), tokenizer=first.tokenizer)
    (run / ".state.pt.dead.tmp").write_bytes(b"")
    del first
    resumed = Trainer(cfg, resume=True, progress=False)
    assert not (run / ".state.pt.dead.tmp").exists()
    assert [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    from astra_core.checkpoint import read_checkpoint

    meta = read_checkpoint(run / "model.safetensors")[2]
    assert meta["train_step"] == "3" and json.loads(meta["frame_size"]) == [64, 64]
    resumed.train()
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_resume_refuses_an_edited_config_but_accepts_new_lengths_and_intervals(tmp_path, capsys):
    path = _config(tmp_path, "edited", steps=2, checkpoint_every=0, eval_every=0)
    Trainer(TrainConfig.from_yaml(path), progress=False).train()
    edited = yaml.safe_load(path.read_text())
    edited["optim"]["lr"] = 0.5
    path.write_text(yaml.safe_dump(edited))
    with pytest.raises(ConfigError, match=r"optim\.lr: 0\.0003 in the run, 0\.5 now.*--accept-config-changes"):
        Trainer(TrainConfig.from_yaml(path), resume=True, progress=False)
    accepted = Trainer(TrainConfig.from_yaml(path), resume=True, progress=False, accept_config_changes=True)
    assert accepted.step == 2 and "optim.lr 0.0003 -> 0.5" in capsys.readouterr().err
    # the run goes on with the new value: the schedule's base and the rate of the next step
    (group,) = accepted.opt.param_groups
    assert accepted.sched.base_lrs == [0.5] and group["lr"] == 0.5 * accepted._lr_factor(2)
    edited["optim"]["lr"] = 3e-4
    edited.update(steps=4, log_every=2)  # a longer run, logged less often: no flag needed
    path.write_text(yaml.safe_dump(edited))
    longer = Trainer(TrainConfig.from_yaml(path), resume=True, progress=False)
    assert "steps 2 -> 4" in capsys.readouterr().err
    assert longer.train()["step"] == 4
    # A run saved before a config field existed resumes when the field keeps its default.
    state = torch.load(tmp_path / "edited" / "state.pt", weights_only=False)
    del state["config"]["model"]["flow"]["action_flow_cumulative"]
    torch.save(state, tmp_path / "edited" / "state.pt")
    assert Trainer(TrainConfig.from_yaml(path), resume=True, progress=False).step == 4
    edited["model"].setdefault("flow", {})["balance_floor"] = 0.1  # a field the run has, changed
    path.write_text(yaml.safe_dump(edited))
    with pytest.raises(ConfigError, match=r"model\.flow\.balance_floor: 0\.05 in the run, 0\.1 now"):
        Trainer(TrainConfig.from_yaml(path), resume=True, progress=False)


def test_shutdown_distributed_leaves_the_process_group(tmp_path):
    """`astra train` destroys its process group before exiting (a live gloo group at interpreter exit can
    abort a rank); with no group it does nothing."""
    import torch.distributed as dist

    from astra_core.apps.train_setup import shutdown_distributed

    shutdown_distributed()  # no group: nothing to do
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    assert dist.is_initialized()
    shutdown_distributed()
    assert not dist.is_initialized()


def test_quiet_train_and_encode_draw_no_progress_bar(tmp_path, capsys):
    for quiet in (False, True):
        flag = ["--quiet"] if quiet else []
        cfg = _config(tmp_path, f"run_{quiet}", steps=2, eval_every=0)
        assert main(["train", str(cfg), *flag]) == 0
        out = tmp_path / f"cache_{quiet}"
        assert main(["encode", "--world", "car", "--episodes", "1", "--frames", "5", "--out", str(out), *flag]) == 0
        printed = capsys.readouterr()
        assert json.loads(printed.out.split("\n}\n")[0] + "\n}")["step"] == 2  # the run's summary either way
        assert list(out.glob("shard-*.h5"))
        for bar in ("train:", "encode:"):
            assert (bar in printed.err) != quiet, (quiet, bar, printed.err[-300:])


def test_a_history_other_than_the_rollout_window_warns_naming_both_fields(tmp_path):
    from astra_core.apps.train_setup import warn_history_window

    def config(chunks: int) -> TrainConfig:  # BASE: chunks of 2, window 4
        return TrainConfig.from_yaml(_config(tmp_path, f"h{chunks}", data={**BASE["data"], "history_chunks": chunks}))

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert warn_history_window(config(2)) is None  # 2 x 2 = the window
        assert warn_history_window(config(0)) is None  # trained without history: an explicit choice
    with pytest.warns(UserWarning, match=r"window=4 keeps 4 .*data\.history_chunks=1 .* at most 2: .* longer history"):
        Trainer(config(1), progress=False)
    with pytest.warns(UserWarning, match=r"at most 6: .* shorter history .* model\.history\.window: 6"):
        assert "history_chunks: 2" in warn_history_window(config(3))


def test_bf16_without_native_bf16_warns_and_the_flag_sets_fp32(tmp_path, monkeypatch, capsys):
    """bf16 on a CPU without avx512_bf16 or AMX is emulated, slower than fp32: training and a WorldModel
    say so and name the fix; `astra train --precision fp32` overrides the config's bf16."""
    import astra_core.world as world

    cfg = TrainConfig.from_yaml(_config(tmp_path, "bf16", steps=1, eval_every=0, precision="bf16", device="cpu"))
    monkeypatch.setattr(world, "_cpu_bf16_supported", lambda: False)
    assert not world.native_bf16("cpu")
    with pytest.warns(UserWarning, match=r"precision: bf16: this CPU .* no native bf16 .* --precision fp32"):
        Trainer(cfg, progress=False)
    with pytest.warns(UserWarning, match=r'precision="bf16": .* no native bf16 .* precision="fp32" is faster'):
        WorldModel.from_checkpoint(None, precision="bf16")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        WorldModel.from_checkpoint(None, precision="fp32")
    monkeypatch.setattr(world, "_cpu_bf16_supported", lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert world.warn_emulated_bf16("cpu", "precision: bf16", "") is None
        assert (
            main(
                [
                    "train",
                    str(_config(tmp_path, "flag", steps=1, eval_every=0, precision="bf16", device="cpu")),
                    "--quiet",
                    "--precision",
                    "fp32",
                ]
            )
            == 0
        )
    stored = json.loads(read_checkpoint(tmp_path / "flag" / "model.safetensors")[2]["train_config"])
    assert stored["precision"] == "fp32"
