"""Which model `finetune` starts from and which file it writes: never one it did not make.

    base, bundled = base_checkpoint(None)     # models/simple_cnn_best.pth, else the bundled model
    target = output_path(None, payload, base)  # models/simple_cnn_user_best.pth

The model it starts from is never overwritten, nor a file --out names that finetune did not make
(a trained model, `train`'s resume point), nor the fine-tuned model that answers now with the
tuning of another model (that one would not answer).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .bundled import TRAIN_COMMAND, TRAINED_CHECKPOINT, USER_CHECKPOINT, choose_model, tuned_from_current_model
from .checkpoint import check_writable, load_checkpoint
from .errors import UserError

USER_SUFFIX = "_user_best.pth"


def base_checkpoint(named: str | Path | None) -> tuple[Path, bool]:
    """(the checkpoint to start from, whether it is the bundled one): the named file, else `train`'s,
    else the model shipped in the package (its .pth: ONNX cannot be trained)."""
    choice = choose_model(named, prefer_onnx=False, tuned=False)
    return choice.path, choice.bundled


def describe_base(base: Path, bundled: bool) -> str:
    if bundled and TRAINED_CHECKPOINT.is_file():  # named: --checkpoint bundled
        return "the model bundled in the package"
    if bundled:
        return f"the model bundled in the package, as {TRAINED_CHECKPOINT} does not exist; {TRAIN_COMMAND} makes one"
    return str(base)


def output_path(out: str | Path | None, payload: dict[str, Any], base: Path) -> Path:
    """--out, else models/<model>_user_best.pth; never the base itself; its folder checked now, not after training."""
    target = Path(out) if out is not None else Path("models") / f"{payload['model_name']}{USER_SUFFIX}"
    if target.is_dir():
        raise UserError(f"--out {target} is a folder: name a file in it, e.g. --out {target / ('mine' + USER_SUFFIX)}")
    if target.suffix.lower() != ".pth":
        # predict, serve and load() tell a checkpoint from an ONNX export by its suffix
        raise UserError(f"--out {target} is not a .pth file name: finetune writes a PyTorch checkpoint; name one "
                        "such as models/mine_user_best.pth (`mnist-classifier export` makes the .onnx of it)")
    if target.resolve() == base.resolve():
        raise UserError(f"{target} is the model to start from, and finetune never overwrites it: pass another --out")
    if target.is_file():
        refuse_to_replace_others(target, named=out is not None)
    check_writable(target.parent)
    return target


def refuse_to_replace_others(target: Path, named: bool) -> None:
    """An existing file is replaced only if finetune made it: a trained model or anything else there
    is never lost to a mistyped --out. Its own default file cut short (a full disk), which torch's zip
    reader cannot open, is replaced: `predict` sends the user here to make it again."""
    try:
        existing: dict[str, Any] | None = load_checkpoint(target)
    except UserError:
        existing = None
    if (existing is not None and "finetune" in existing) or (existing is None and not named and _cut_short(target)):
        return
    what = ("a checkpoint `train` saved" if existing is not None and "optimizer_state_dict" in existing
            else "a model finetune did not make" if existing is not None else "not a checkpoint finetune made")
    where = f"--out {target}" if named else f"{target}, where finetune writes by default,"
    raise UserError(f"{where} exists and is {what}: finetune replaces only its own models; "
                    + ("name a new file, or move that one away first" if named else
                       "move that one away first, or name another file with --out"))


def keep_the_answering_model(target: Path, base: Path, bundled: bool) -> None:
    """Refuse to replace the fine-tuned model that answers now with one that would not answer
    (tuned from --checkpoint bundled or another file, while another model is the default)."""
    if target.resolve() != USER_CHECKPOINT.resolve() or not target.is_file() or not tuned_from_current_model(target):
        return
    default = choose_model(None, prefer_onnx=False, tuned=False)
    if bundled == default.bundled and (bundled or base.resolve() == default.path.resolve()):
        return  # tuning the default model again: the new one answers in its place
    other = Path("models") / f"{'bundled' if bundled else base.stem}{USER_SUFFIX}"
    if other.resolve() == target.resolve():
        other = other.with_name(f"{base.stem}_2{USER_SUFFIX}")
    raise UserError(f"{target} is the fine-tuned model that answers now (tuned from {default.path}); tuning "
                    f"{describe_base(base, bundled)} would replace it with one that does not answer: name the new one "
                    f"with --out, e.g. --out {other}, or delete {target} first")


def _cut_short(path: Path) -> bool:
    """A zip archive, as torch.save writes, that torch cannot read: a save cut short."""
    import torch

    with open(path, "rb") as file:
        if file.read(4) != b"PK\x03\x04":
            return False
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 (torch's zip and unpickling errors have no common type)
        return True
    return False
