"""The pieces of the training loop on their own: schedule, sampler, checkpoints, progress."""

from __future__ import annotations

import pytest
import torch

from lettucify.errors import CheckpointError
from lettucify import checkpoint as ckpt
from lettucify.train.progress import EpochProgress
from lettucify.data.sampler import ResumableSampler
from lettucify.train.schedule import constant, warmup_cosine


def lrs(scheduler, steps: int) -> list[float]:
    out = []
    for _ in range(steps):
        out.append(scheduler.get_last_lr()[0])
        scheduler.optimizer.step()
        scheduler.step()
    return out


def optimizer(lr: float = 1.0) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def test_warmup_cosine_rises_then_decays_to_the_floor():
    values = lrs(warmup_cosine(optimizer(), steps_per_epoch=10, epochs=5, warmup_epochs=1, min_lr_ratio=0.1), 50)
    assert values[0] < values[5] < values[9] <= 1.0  # warm-up
    assert all(a >= b for a, b in zip(values[10:], values[11:]))  # then never rises
    assert values[-1] == pytest.approx(0.1, abs=0.01)


def test_constant_schedule_keeps_the_lr():
    assert set(lrs(constant(optimizer(0.5), steps_per_epoch=3, epochs=2), 6)) == {0.5}


def test_sampler_resumes_with_the_tail_of_the_same_epoch():
    data = list(range(23))
    full = ResumableSampler(data, seed=3)
    full.set_epoch(2)
    order = list(full)
    assert sorted(index for index, _ in order) == data
    resumed = ResumableSampler(data, seed=3)
    resumed.set_epoch(2)
    resumed.set_start(8)
    assert list(resumed) == order[8:] and len(resumed) == 15
    other = ResumableSampler(data, seed=3)
    other.set_epoch(3)
    assert [i for i, _ in other] != [i for i, _ in order]
    # Augmentation seeds differ between samples and between epochs.
    assert len({seed for _, seed in order} | {seed for _, seed in other}) == 46


def test_sampler_shards_across_ranks_without_overlap():
    data = list(range(10))
    shards = []
    for rank in range(2):
        sampler = ResumableSampler(data, num_replicas=2, rank=rank, seed=0)
        sampler.set_epoch(0)
        shards.append({index for index, _ in sampler})
    assert shards[0].isdisjoint(shards[1]) and shards[0] | shards[1] == set(data)


def test_checkpoint_roundtrip_and_damaged_file(tmp_path):
    path = tmp_path / "c" / "last.pt"
    ckpt.save_atomic({"model": {"w": torch.ones(2)}, "rng": ckpt.rng_state()}, path)
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temporary left behind
    payload = ckpt.load(path)
    assert torch.equal(payload["model"]["w"], torch.ones(2))

    before = torch.rand(3)
    torch.manual_seed(123)
    ckpt.set_rng_state(payload["rng"])
    assert torch.equal(torch.rand(3), before)  # back to the saved state, whatever came between

    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        ckpt.load(path)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        ckpt.resume_path(str(tmp_path / "missing.pt"), tmp_path)
    (tmp_path / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    with pytest.raises(CheckpointError, match="passwd is not a Lettucify checkpoint .* checkpoints/last.pt"):
        ckpt.load(tmp_path / "passwd")
    with pytest.raises(CheckpointError, match="no checkpoint file at"):
        ckpt.load(tmp_path)
    assert ckpt.resume_path("never", path.parent) is None
    assert ckpt.resume_path("auto", tmp_path / "empty") is None


def test_checkpoint_with_a_pickled_object_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": ckpt.FORMAT_VERSION, "payload": object()}, path)
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        ckpt.load(path)


def test_progress_bar_shows_epoch_loss_and_throughput(capsys):
    with EpochProgress(0, 3, steps=2, mode="bar") as progress:
        progress.update(loss=1.5, images_per_s=12.0)
        progress.update(loss=1.25, images_per_s=14.0)
    err = capsys.readouterr().err
    assert "epoch 1/3" in err and "loss=1.250" in err and "img_s=14.0" in err
    with EpochProgress(0, 3, steps=2, mode="lines") as progress:
        progress.update(loss=1.0, images_per_s=1.0)
    assert capsys.readouterr().err == ""
