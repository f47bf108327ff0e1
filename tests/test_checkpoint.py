"""Checkpoints: round trip, and one clear UserError for every broken file a user can meet."""

import json
import re
from pathlib import Path

import pytest
import torch

from dfplan import checkpoint as ckpt
from dfplan.checkpoint import load_checkpoint, save_checkpoint
from dfplan.errors import UserError
from dfplan.model import DiffusionForcingModel, ModelConfig

TINY = ModelConfig(n_layer=1, n_head=2, n_embd=16, max_tokens=4)
META = {
    "task": "maze2d-umaze",
    "normalizer": {"obs_mean": [0.0] * 4, "obs_std": [1.0] * 4},
    "dataset_fingerprint": "abc",
    "train_step": 7,
}
# A pickle (protocol 4, an empty dict) written as bytes: the test needs no pickle module.
PICKLE_BYTES = b"\x80\x04\x95\x03\x00\x00\x00\x00\x00\x00\x00}\x94."


@pytest.fixture()
def saved(tmp_path) -> tuple[Path, DiffusionForcingModel]:
    torch.manual_seed(0)
    model = DiffusionForcingModel(TINY)
    stem = tmp_path / "run" / "latest"
    save_checkpoint(stem, model, META)
    return stem, model


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg and msg
    return msg


def test_round_trip(saved):
    stem, model = saved
    assert sorted(p.name for p in stem.parent.iterdir()) == ["latest.json", "latest.safetensors"]
    x = torch.randn(2, 3, TINY.token_dim)
    levels = torch.randint(0, 1001, (2, 3))
    obs = torch.randn(2, 4)
    for path in (stem, f"{stem}.safetensors", f"{stem}.json"):
        loaded, meta = load_checkpoint(path, task="maze2d-umaze")
        assert not loaded.training
        with torch.no_grad():
            assert torch.equal(loaded(x, levels, obs), model.eval()(x, levels, obs))
    for key in ("task", "normalizer", "dataset_fingerprint", "train_step", "dfplan_version"):
        assert key in meta
    assert ModelConfig(**meta["config"]) == TINY


def test_meta_read_back_saves_again_as_a_new_matching_pair(saved, tmp_path):
    stem, model = saved
    _, meta = load_checkpoint(stem)  # carries the first save's id
    again = tmp_path / "copy" / "latest"
    new_id = save_checkpoint(again, model, {**meta, "train_step": 8})
    assert new_id != meta["save_id"]
    assert load_checkpoint(again)[1]["save_id"] == new_id


def test_missing_files(saved):
    stem, _ = saved
    with pytest.raises(UserError, match="not found") as e:
        load_checkpoint(stem.with_name("nope"))
    _one_line(e)
    Path(f"{stem}.json").unlink()
    with pytest.raises(UserError, match=re.escape(f"{stem}.json")):
        load_checkpoint(stem)


def test_truncated_weights(saved):
    stem, _ = saved
    weights = Path(f"{stem}.safetensors")
    weights.write_bytes(weights.read_bytes()[:200])
    with pytest.raises(UserError, match="not a valid safetensors") as e:
        load_checkpoint(stem)
    _one_line(e)


def test_pickle_renamed_to_safetensors_is_refused(saved):
    stem, _ = saved
    Path(f"{stem}.safetensors").write_bytes(PICKLE_BYTES)
    with pytest.raises(UserError, match="pickle") as e:
        load_checkpoint(stem)
    assert "never unpickles" in _one_line(e)
    Path(f"{stem}.safetensors").write_bytes(b"PK\x03\x04" + b"\0" * 64)  # a torch.save zip
    with pytest.raises(UserError, match="pickle"):
        load_checkpoint(stem)


def test_corrupt_json(saved):
    stem, _ = saved
    Path(f"{stem}.json").write_text('{"format": "dfplan-checkpoint", "task": ')
    with pytest.raises(UserError, match="not valid JSON") as e:
        load_checkpoint(stem)
    _one_line(e)


def test_task_mismatch(saved):
    stem, _ = saved
    with pytest.raises(UserError, match="trained for task 'maze2d-umaze', not 'maze2d-large'"):
        load_checkpoint(stem, task="maze2d-large")


def test_shape_mismatch(saved):
    stem, _ = saved
    meta_path = Path(f"{stem}.json")
    meta = json.loads(meta_path.read_text())
    meta["config"]["n_embd"] = 32  # weights are 16 wide
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(UserError, match="does not match the model config") as e:
        load_checkpoint(stem)
    assert "is (" in _one_line(e)


def test_weights_from_another_save(saved, tmp_path):
    stem, _ = saved
    other = tmp_path / "other"
    save_checkpoint(
        other, DiffusionForcingModel(ModelConfig(**{**TINY.__dict__, "n_embd": 32})), META
    )
    Path(f"{stem}.safetensors").write_bytes(Path(f"{other}.safetensors").read_bytes())
    with pytest.raises(UserError, match="different saves"):
        load_checkpoint(stem)


def test_unknown_config_field(saved):
    stem, _ = saved
    meta_path = Path(f"{stem}.json")
    meta = json.loads(meta_path.read_text())
    meta["config"]["rotary"] = True
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(UserError, match="upgrade dfplan"):
        load_checkpoint(stem)


def test_not_a_checkpoint_json(saved):
    stem, _ = saved
    Path(f"{stem}.json").write_text("[1, 2]")
    with pytest.raises(UserError, match="not a dfplan checkpoint"):
        load_checkpoint(stem)


def test_optimizer_state_round_trips_without_pickle(tmp_path):
    torch.manual_seed(0)
    model = DiffusionForcingModel(TINY)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.99))
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(2, 3, 60), torch.randint(0, 1001, (2, 3)), torch.randn(2, 4)).pow(
            2
        ).sum().backward()
        opt.step()
    tensors, info = ckpt.flatten_optimizer(opt.state_dict())
    rng = {"rng.torch": torch.get_rng_state()}
    ckpt.save_resume(tmp_path / "latest", {**tensors, **rng}, {"optimizer": info, "step": 3})
    loaded, loaded_info = ckpt.load_resume(tmp_path / "latest")
    assert loaded_info["step"] == 3
    assert torch.equal(loaded["rng.torch"], rng["rng.torch"])
    restored = ckpt.unflatten_optimizer(loaded, loaded_info["optimizer"])
    opt2 = torch.optim.AdamW(model.parameters(), lr=5.0)
    opt2.load_state_dict(restored)
    a, b = opt.state_dict(), opt2.state_dict()
    assert a["param_groups"] == b["param_groups"]
    for pid, state in a["state"].items():
        for key, value in state.items():
            assert torch.equal(value, b["state"][pid][key])


def test_no_pickle_or_torch_load_in_this_code():
    root = Path(__file__).resolve().parents[1] / "dfplan"
    for name in ("checkpoint.py", "train.py", "model.py", "diffusion.py"):
        source = (root / name).read_text()
        assert "import pickle" not in source and "torch.load(" not in source, name


def test_meta_tensors_live_in_the_safetensors_file(tmp_path):
    """A tensor in the meta (a waypoint graph) is stored beside the weights, named in the JSON,
    and comes back in its place; the model's weights load as before."""
    from safetensors import safe_open

    torch.manual_seed(0)
    model = DiffusionForcingModel(TINY)
    edges = torch.tensor([[0, 1, 5], [1, 0, 6]], dtype=torch.int32)
    meta = {**META, "waypoints": {"config": {"spacing": 1.0}, "edges": edges}}
    stem = tmp_path / "graph"
    save_checkpoint(stem, model, meta)
    written = json.loads(stem.with_suffix(".json").read_text())
    assert written["waypoints"] == {
        "config": {"spacing": 1.0},
        "edges": {"tensor": "meta.waypoints.edges"},
    }
    with safe_open(str(stem.with_suffix(".safetensors")), framework="pt") as f:
        assert "meta.waypoints.edges" in f.keys()
    loaded, back = load_checkpoint(stem, task=META["task"])
    assert torch.equal(back["waypoints"]["edges"], edges)
    assert back["waypoints"]["config"] == {"spacing": 1.0}
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)
