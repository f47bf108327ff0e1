"""Checkpoints: `STEM.safetensors` (tensors) + `STEM.json` (everything else), no pickle.

The JSON holds the model config (a `ModelConfig` as a dict), the task, the normaliser, the dataset
fingerprint, the train step and the dfplan version. A tensor in the meta (a waypoint graph's
nodes and edges: arrays too big for readable JSON) is stored in the safetensors file under
"meta.PATH" beside the weights, and the JSON holds {"tensor": "meta.PATH"} in its place.
Training resume state (raw weights, optimizer, EMA, RNG states) lives apart in
`STEM.resume.safetensors` + `STEM.resume.json`, so a shipped checkpoint is just the two small
files a planner needs.

Every file is written atomically (a temp file in the same folder, then os.replace), and both
files of a pair carry the same random save id, so a pair mixed from two saves is detected. Files
saved together are all written and synced before the first rename; a kill during the renames
leaves the rest as complete temp files, which `dfplan.run_state.finish_interrupted_save` renames.
Nothing here calls torch.load or pickle: a pickle renamed to .safetensors is refused, not run.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import asdict, fields
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes

from dfplan.errors import UserError
from dfplan.files import atomic_write_files
from dfplan.model import DiffusionForcingModel, ModelConfig
from dfplan.policies.diffuser_unet import TemporalUNet, UNetConfig
from dfplan.policies.gcbc import GCBCConfig, GCBCNet

FORMAT = "dfplan-checkpoint"
RESUME_FORMAT = "dfplan-resume"
FORMAT_VERSION = 1
SUFFIXES = (".safetensors", ".json")
META_TENSORS = "meta."  # key prefix of the meta's tensors in STEM.safetensors
# The networks a checkpoint can hold: its JSON's "model_kind" picks the config and model classes
# (files written before the Diffuser baseline have none and hold "df"). Kind names are also the
# bench methods that use them.
MODEL_KINDS = {
    "df": (ModelConfig, DiffusionForcingModel),
    "diffuser": (UNetConfig, TemporalUNet),
    "gcbc": (GCBCConfig, GCBCNet),
}
# shipped stems: maze2d-umaze, maze2d-umaze-diffuser, maze2d-umaze-gcbc
SHIPPED_SUFFIX = {"df": "", "diffuser": "-diffuser", "gcbc": "-gcbc"}


def model_kind(model: torch.nn.Module) -> str:
    """The MODEL_KINDS name of a model instance."""
    return next(k for k, (_, cls) in MODEL_KINDS.items() if isinstance(model, cls))


# -- paths and atomic writes -----------------------------------------------------------------
def checkpoint_stem(stem_or_path: str | os.PathLike) -> Path:
    """'run/latest', 'run/latest.safetensors' or 'run/latest.json' -> Path('run/latest')."""
    path = Path(stem_or_path).expanduser()
    return path.with_suffix("") if path.suffix in SUFFIXES else path


def _with(stem: Path, suffix: str) -> Path:
    return stem.with_name(stem.name + suffix)


def _pair_files(
    stem: Path, tensors: dict, info: dict, fmt: str, save_id: str | None = None
) -> tuple[dict[Path, bytes], str]:
    """The bytes of STEM.safetensors and STEM.json, and the save id both carry (a new one
    unless given: files saved together share one)."""
    save_id = save_id or uuid.uuid4().hex
    info, meta_tensors = _split_meta_tensors(info)
    flat = {k: v.detach().to("cpu").contiguous() for k, v in {**tensors, **meta_tensors}.items()}
    weights = safetensors_bytes(flat, metadata={"format": "pt", "dfplan_save_id": save_id})
    header = {"format": fmt, "format_version": FORMAT_VERSION, "save_id": save_id}
    # The header wins: meta read back from a checkpoint carries the old save id.
    kept = {k: v for k, v in info.items() if k not in header}
    meta = (json.dumps({**header, **kept}, indent=2) + "\n").encode()
    return {_with(stem, ".safetensors"): weights, _with(stem, ".json"): meta}, save_id


def _read_pair(stem: Path, fmt: str, what: str) -> tuple[dict[str, torch.Tensor], dict]:
    weights, meta_path = _with(stem, ".safetensors"), _with(stem, ".json")
    missing = [str(p) for p in (weights, meta_path) if not p.is_file()]
    if missing:
        raise UserError(
            f"{what} {stem} not found: missing {' and '.join(missing)} "
            "(a checkpoint is a STEM.safetensors + STEM.json pair)"
        )
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(
            f"{meta_path} is corrupt (not valid JSON: {e}); re-create the {what}"
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        raise UserError(f'{meta_path} is not a dfplan {what} file (no \'"format": "{fmt}"\')')
    tensors, header = _read_safetensors(weights)
    if header.get("dfplan_save_id") != meta.get("save_id"):
        raise UserError(
            f"{weights} and {meta_path} come from different saves (an interrupted copy, or a "
            "training run killed while saving: rerun it with --resume); copy both files of one save"
        )
    meta_tensors = {k: tensors.pop(k) for k in list(tensors) if k.startswith(META_TENSORS)}
    try:
        meta = _join_meta_tensors(meta, meta_tensors)
    except KeyError as e:
        raise UserError(f"{weights} lacks the tensor {e} that {meta_path} names") from None
    return tensors, meta


def file_save_id(path: Path, suffix: str) -> str | None:
    """The save id a checkpoint or resume file carries (`suffix` says which of the pair it is:
    temp files end in .tmp); None when it is unreadable or carries none."""
    try:
        if suffix == ".json":
            return json.loads(path.read_text()).get("save_id")
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return (f.metadata() or {}).get("dfplan_save_id")
    except (OSError, ValueError, SafetensorError, AttributeError, UnicodeDecodeError):
        return None


def _split_meta_tensors(meta: dict, path: str = "") -> tuple[dict, dict[str, torch.Tensor]]:
    """(meta with each tensor replaced by {"tensor": key}, {key: tensor}), keys "meta.A.B"."""
    plain, tensors = {}, {}
    for name, value in meta.items():
        key = f"{path}{name}"
        if isinstance(value, torch.Tensor):
            plain[name] = {"tensor": META_TENSORS + key}
            tensors[META_TENSORS + key] = value
        elif isinstance(value, dict):
            plain[name], inner = _split_meta_tensors(value, key + ".")
            tensors.update(inner)
        else:
            plain[name] = value
    return plain, tensors


def _join_meta_tensors(meta: dict, tensors: dict[str, torch.Tensor]) -> dict:
    """The inverse of `_split_meta_tensors` (KeyError: a named tensor is missing)."""
    joined = {}
    for name, value in meta.items():
        if isinstance(value, dict) and set(value) == {"tensor"}:
            joined[name] = tensors[value["tensor"]]
        elif isinstance(value, dict):
            joined[name] = _join_meta_tensors(value, tensors)
        else:
            joined[name] = value
    return joined


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    with open(path, "rb") as f:
        head = f.read(4)
    # Say what the file is when it is a pickle or a torch.save zip: both can run code on load.
    if head[:1] == b"\x80" or head == b"PK\x03\x04":
        raise UserError(
            f"{path} is a pickle / torch.save file, not safetensors; dfplan never unpickles "
            "files (they can run code): convert the weights to safetensors"
        )
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(
            f"{path} is not a valid safetensors file (corrupt or truncated: {e})"
        ) from None
    return tensors, header


# -- checkpoints shipped inside the package --------------------------------------------------
SHIPPED_DIR = Path(__file__).parent / "checkpoints"


def shipped_checkpoints(kind: str | None = None) -> list[Path]:
    """Stems of the checkpoints shipped as package data (only those of one model kind if given)."""
    stems = sorted(p.with_suffix("") for p in SHIPPED_DIR.glob("*.safetensors"))
    if kind is None:
        return stems
    suffixes = [s for k, s in SHIPPED_SUFFIX.items() if k != kind and s]
    own = SHIPPED_SUFFIX[kind]
    return [s for s in stems if s.name.endswith(own) and not s.name.endswith(tuple(suffixes))]


def shipped_checkpoint(task, kind: str = "df") -> Path:
    """The shipped checkpoint of a model kind for a `Task` (Multi2D tasks share their maze's
    Maze2D model)."""
    stem = SHIPPED_DIR / (task.dataset_task + SHIPPED_SUFFIX[kind])
    if not stem.with_suffix(".safetensors").exists():
        what = "" if kind == "df" else f" {kind}"
        flag = "" if kind == "df" else f" --model {kind}"
        raise UserError(
            f"no trained{what} checkpoint ships for {task.name} in this version; train one with "
            f"'dfplan train {task.dataset_task}{flag}' and pass it with --checkpoint"
        )
    return stem


def shipped_paper_checkpoint(task) -> Path | None:
    """The unconditional DF checkpoint shipped for the paper's setting (`df-paper`) of a `Task`'s
    maze, when the maze has one apart from its goal-conditioned checkpoint; else None."""
    stem = SHIPPED_DIR / f"{task.dataset_task}-paper"
    return stem if stem.with_suffix(".safetensors").exists() else None


# -- weights + metadata ----------------------------------------------------------------------
def save_checkpoint(stem: str | os.PathLike, model: DiffusionForcingModel, meta: dict) -> str:
    """Write `STEM.safetensors` (the model's weights) and `STEM.json` (`meta` + the model config
    + the dfplan version); returns the save id both files carry.

    `meta` must hold "task" and should hold "normalizer", "dataset_fingerprint", "train_step".
    """
    files, save_id = checkpoint_files(stem, model, meta)
    atomic_write_files(files)
    return save_id


def checkpoint_files(
    stem: str | os.PathLike, model: DiffusionForcingModel, meta: dict
) -> tuple[dict[Path, bytes], str]:
    """What `save_checkpoint` writes, as {path: bytes}, and the save id; nothing is written."""
    from dfplan import __version__

    if "task" not in meta:
        raise ValueError("checkpoint meta needs a 'task'")
    info = {"dfplan_version": __version__, **meta, "model_kind": model_kind(model)}
    info["config"] = asdict(model.config)
    return _pair_files(checkpoint_stem(stem), model.state_dict(), info, FORMAT)


def load_checkpoint(
    stem_or_path: str | os.PathLike,
    task: str | None = None,
    device: str | torch.device = "cpu",
    kind: str | None = "df",
) -> tuple[torch.nn.Module, dict]:
    """Rebuild the model from `STEM.json`'s config, load `STEM.safetensors`, return (model, meta).

    The model is in eval mode on `device`. With `task`, the checkpoint must have been trained for
    it; with `kind` (a MODEL_KINDS name; None: any), it must hold that kind of model. Every problem
    a user can cause (missing or corrupt files, a pickle, another task's, kind's or config's
    weights) raises UserError with one line saying what to do.
    """
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device '{device}' requested but no CUDA GPU is available; use cpu")
    stem = checkpoint_stem(stem_or_path)
    tensors, meta = _read_pair(stem, FORMAT, "checkpoint")
    if task is not None and meta.get("task") != task:
        raise UserError(
            f"checkpoint {stem} was trained for task '{meta.get('task')}', not '{task}'; "
            f"use a {task} checkpoint (dfplan train {task})"
        )
    found = meta.get("model_kind", "df")
    if found not in MODEL_KINDS:
        raise UserError(
            f"{stem}.json holds a '{found}' model, which this dfplan does not know; upgrade dfplan"
        )
    if kind is not None and found != kind:
        raise UserError(
            f"checkpoint {stem} holds a '{found}' model, not a '{kind}' one; "
            f"use it as a {found} checkpoint (e.g. dfplan bench --method {found})"
        )
    config_cls, model_cls = MODEL_KINDS[found]
    model = model_cls(_model_config(meta, stem, config_cls))
    _check_shapes(model, tensors, stem)
    model.load_state_dict(tensors, strict=True)
    return model.to(device).eval(), meta


def _model_config(meta: dict, stem: Path, config_cls: type):
    raw = meta.get("config")
    if not isinstance(raw, dict):
        raise UserError(f"{stem}.json has no model config; re-create the checkpoint")
    if config_cls is ModelConfig:
        raw = _upgrade_df_config(raw)
    known = {f.name for f in fields(config_cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise UserError(
            f"{stem}.json has model settings this dfplan does not know ({', '.join(unknown)}); "
            f"it was written by dfplan {meta.get('dfplan_version', '?')}: upgrade dfplan"
        )
    config = config_cls(**raw)
    try:
        config.validate()
    except ValueError as e:
        raise UserError(f"{stem}.json has an invalid model config: {e}") from None
    return config


def _upgrade_df_config(raw: dict) -> dict:
    """Read DF configs written before goal conditioning or goal offsets: no `goal_dim` means an
    unconditional model, no `goal_offset_octaves` a model without the offset input, and the
    retired input options load when they were off (on, they stay unknown)."""
    raw = {"goal_dim": 0, "goal_offset_octaves": 0, **raw}
    for name in ("position_features", "residual_obs"):
        if name in raw and not raw[name]:
            del raw[name]
    return raw


def _check_shapes(model: torch.nn.Module, tensors: dict, stem: Path) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    wrong = [
        f"{k} is {tuple(tensors[k].shape)}, the config needs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in tensors and tensors[k].shape != v.shape
    ]
    if missing or extra or wrong:
        detail = wrong[:1] or [f"missing {missing[:3]}" if missing else f"unexpected {extra[:3]}"]
        raise UserError(
            f"{stem}.safetensors does not match the model config in {stem}.json ({detail[0]}); "
            "the two files come from different models"
        )


# -- resume state ----------------------------------------------------------------------------
def resume_stem(stem: str | os.PathLike) -> Path:
    stem = checkpoint_stem(stem)
    return stem.with_name(stem.name + ".resume")


def save_resume(stem: str | os.PathLike, tensors: dict[str, torch.Tensor], info: dict) -> None:
    """Write `STEM.resume.safetensors` (named tensors) and `STEM.resume.json` (`info`)."""
    atomic_write_files(resume_files(stem, tensors, info))


def resume_files(
    stem: str | os.PathLike,
    tensors: dict[str, torch.Tensor],
    info: dict,
    save_id: str | None = None,
) -> dict[Path, bytes]:
    """What `save_resume` writes, as {path: bytes}; nothing is written. `save_id`: the
    checkpoint's, when both are saved together."""
    return _pair_files(resume_stem(stem), tensors, info, RESUME_FORMAT, save_id)[0]


def load_resume(stem: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    return _read_pair(resume_stem(stem), RESUME_FORMAT, "resume state")


def flatten_optimizer(state_dict: dict, prefix: str = "optim.") -> tuple[dict, dict]:
    """Optimizer state dict -> (named tensors, JSON-able rest). No pickle needed to store it."""
    tensors, scalars = {}, {}
    for pid, state in state_dict["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"{prefix}{pid}.{key}"] = value
            else:
                scalars[f"{pid}.{key}"] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def unflatten_optimizer(tensors: dict, info: dict, prefix: str = "optim.") -> dict:
    """Inverse of flatten_optimizer (JSON turned the tuples into lists: `betas` goes back)."""
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        if name.startswith(prefix):
            pid, key = name[len(prefix) :].split(".", 1)
            state.setdefault(int(pid), {})[key] = value
    for name, value in info["scalars"].items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    groups = [
        {k: tuple(v) if k == "betas" else v for k, v in group.items()}
        for group in info["param_groups"]
    ]
    return {"state": state, "param_groups": groups}
