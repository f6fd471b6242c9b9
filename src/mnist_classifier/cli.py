"""`mnist-classifier COMMAND`: parse flags, call one function per command, nothing else.

Every flag states its default in its help text. Expected failures are one line on
stderr and a non-zero exit status; see errors.py.
"""
from __future__ import annotations

import argparse
import gc
import os
import shlex
import signal
import sys
from contextlib import suppress
from pathlib import Path

from . import __version__
from .datasets import DATASETS, SOURCE_NAMES
from .errors import INTERRUPTED_EXIT, UserError, hide_image_size_warning
from .hardware import DEVICES, PRECISIONS
from .plugins import import_plugins

DEFAULT_CHECKPOINT = "models/simple_cnn_best.pth"
DEFAULT_USER_DATA = "data/user"  # user_examples.DEFAULT_USER_DATA, without importing OpenCV to parse flags
ANSWERING_MODEL_HELP = ("model to use, .pth or .onnx, or `bundled` for the model shipped in the package (default: "
                        f"finetune's models/simple_cnn_user_best.pth, else {DEFAULT_CHECKPOINT}, else the bundled one)")


def cmd_data(args: argparse.Namespace) -> int:
    from .datasets import get_dataset_spec
    from .sources import fetch_dataset, load_arrays

    spec = get_dataset_spec(args.dataset)
    raw_dir = fetch_dataset(args.data_dir, source=args.source, dataset=args.dataset)
    train_x, _, test_x, _ = load_arrays(raw_dir, spec)
    print(f"{spec.name}: {len(train_x):,} training and {len(test_x):,} test images, verified, in {raw_dir}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .config import default_config_path, left_to_defaults, resolve_config
    from .distributed import launched_rank
    from .run_files import resume_command, resume_config
    from .training import TrainingInterrupted, train

    overrides = {
        "model_name": args.model, "epochs": args.epochs, "batch_size": args.batch_size,
        "learning_rate": args.lr, "weight_decay": args.weight_decay, "seed": args.seed,
        "limit_train": args.limit_train, "device": args.device, "precision": args.precision, "data_dir": args.data_dir,
        "dataset": args.dataset, "save_dir": args.save_dir, "log_dir": args.log_dir,
    }
    payload = None
    if args.resume:
        if args.config:
            raise UserError("--resume continues a stored run with its own config: drop --config")
        config, payload = resume_config(args.resume, overrides)
    else:
        config = resolve_config(args.config, overrides)
        if args.config is None and launched_rank() == 0 and default_config_path(config.model_name,
                                                                                config.dataset) is None:
            print(f"note: no recipe configs/{config.model_name}.yaml: config.py's defaults and your flags "
                  "(--config FILE names a recipe)")
        defaults = left_to_defaults(args.config, config) if args.config and launched_rank() == 0 else {}
        defaults = {key: values for key, values in defaults.items() if overrides.get(key) is None}  # flags are not defaults
        if defaults:
            shown = ", ".join(f"{key} {used!r} (recipe: {wanted!r})" for key, (used, wanted) in defaults.items())
            print(f"note: {args.config} does not set what {config.model_name}'s recipe sets, so config.py's defaults "
                  f"apply: {shown}; copy {default_config_path(config.model_name, config.dataset)} and edit it to "
                  "start from the recipe")
    # A SIGTERM (`kill`, torchrun stopping the others when one process died) stops it as Ctrl+C does:
    # the saved epoch named, no traceback.
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        result = train(config, resume_payload=payload)
    except (TrainingInterrupted, KeyboardInterrupt) as interrupt:  # the latter: during the set-up
        saved = isinstance(interrupt, TrainingInterrupted) and Path(str(interrupt)).is_file()
        if launched_rank() != 0:  # under torchrun every rank is interrupted; one says so
            return 130
        if saved or (args.resume and not isinstance(interrupt, TrainingInterrupted)):  # a resume's set-up
            point = interrupt if saved else resume_point(config, args.resume)
            print(f"\ninterrupted: the last finished epoch is saved; resume with `{resume_command(point)}`",
                  file=sys.stderr)
        else:
            print("\ninterrupted before the first epoch finished: nothing to resume, start again", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    if result is not None:
        print(f"best validation accuracy {result.best_val_accuracy:.2%}; "
              f"test accuracy {result.test_accuracy:.2%}")
        board = f"; TensorBoard: tensorboard --logdir {result.run_dir.parent}" if result.run_dir else ""
        print(f"checkpoints: {result.best_path} (best), {result.last_path} (resume point){board}")
    return 0


def resume_point(config, named: str) -> Path:
    """Where a resumed run's last epoch is now: moved by --save-dir, the copy there."""
    from .run_files import checkpoint_paths

    moved = checkpoint_paths(config)[1]
    return moved if moved.is_file() else Path(named)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .assessment import evaluate_checkpoint

    if args.ensemble and args.checkpoint:
        raise UserError("--ensemble names every checkpoint to average: drop --checkpoint, or list it after --ensemble")
    if args.ensemble:
        checkpoints = [ensemble_member(name) for name in args.ensemble]
    else:
        from .bundled import model_for_dataset

        checkpoints = trained_model(args.checkpoint or model_for_dataset(args.dataset), "evaluating")
    evaluate_checkpoint(checkpoints, args.out, args.data_dir, dataset=args.dataset, tta=args.tta,
                        user_data=args.user_data)
    return 0


def ensemble_member(named: str) -> Path:
    """A file, or `bundled` for the model shipped in the package (as --checkpoint takes it)."""
    from .bundled import choose_model

    return choose_model(named, prefer_onnx=False, tuned=False).path


def trained_model(named: str | None, doing: str = "using") -> Path:
    """The model `evaluate` and `export` work on: the named one, else models/simple_cnn_best.pth, else
    (a fresh clone, nothing trained yet) the bundled checkpoint, said on stderr; and when a fine-tuned
    model answers `predict`, that it is not the one `doing` ("exported") here."""
    from .bundled import choose_model
    from .errors import CheckpointError

    choice = choose_model(named, prefer_onnx=False, tuned=False)
    if choice.worth_saying:
        print(choice.describe(), file=sys.stderr)
    try:
        answering = choose_model(named, prefer_onnx=False) if named is None else choice
    except CheckpointError:  # a damaged fine-tuned model answers nothing (predict says so): no matter here
        answering = choice
    if answering.tuned:  # helper-59: the deployed export was the original, while predict and serve use the tuned one
        print(f"note: {doing} {choice.path}, not {answering.path}, the model fine-tuned on your drawings that "
              f"predict, demo and serve answer with; --checkpoint {answering.path} for that one", file=sys.stderr)
    return choice.path


def answering_model(named: str | None, prefer_onnx: bool = True) -> Path:
    """The model `predict`, `demo` and `serve` use (bundled.choose_model); said on stderr unless named or usual.
    `prefer_onnx` False: the bundled model's .pth (`serve --backend torch`)."""
    from .bundled import choose_model

    choice = choose_model(named, prefer_onnx=prefer_onnx)
    if choice.worth_saying:
        print(choice.describe(), file=sys.stderr)
    return choice.path


def cmd_predict(args: argparse.Namespace) -> int:
    from .predict import run_predict

    return run_predict(args.images, answering_model(args.checkpoint), as_json=args.json, top=args.top,
                       reject_threshold=args.reject_threshold)


def cmd_calibrate(args: argparse.Namespace) -> int:
    from .bundled import BUNDLED_NAME
    from .honesty import calibrate_checkpoint

    if args.checkpoint == BUNDLED_NAME:
        raise UserError("the bundled model is calibrated already, and a package's files are not rewritten: "
                        "calibrate a checkpoint of your own (--checkpoint models/simple_cnn_best.pth)")
    calibrate_checkpoint(args.checkpoint, args.data_dir)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .export import export_onnx

    path = export_onnx(trained_model(args.checkpoint, "exporting"), args.out, data_dir=args.data_dir)
    print(f"wrote {path} (ONNX, checked against PyTorch on 1,000 test images); "
          f"use it with `mnist-classifier predict IMAGE --checkpoint {shlex.quote(str(path))}`")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo.desktop import run_demo

    return run_demo(answering_model(args.checkpoint), reject_threshold=args.reject_threshold,
                    user_data=None if args.no_collect else args.user_data)


def cmd_serve(args: argparse.Namespace) -> int:
    from .demo.server import serve

    model = answering_model(args.checkpoint, prefer_onnx=args.backend != "torch")
    serve(model, host=args.host, port=args.port, workers=args.workers,
          reject_threshold=args.reject_threshold, backend=args.backend, data_dir=args.data_dir,
          user_data=None if args.no_collect else args.user_data, allowed_hosts=tuple(args.allow_host))
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    from .finetune import run_finetune

    try:
        return run_finetune(checkpoint=args.checkpoint, user_data=args.user_data, data_dir=args.data_dir,
                            epochs=args.epochs, seed=args.seed, out=args.out)
    except KeyboardInterrupt:  # the tuned model is written whole at the end, or not at all
        print("\ninterrupted: no fine-tuned model was written; the original is unchanged", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mnist-classifier", description="Train, evaluate, export and draw digits for a PyTorch MNIST classifier.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = commands.add_parser("data", help="fetch and verify the dataset")
    add_data_flags(data)
    data.add_argument("--source", default="auto", choices=("auto", *SOURCE_NAMES),
                      help=f"where to get the files (default: auto = each dataset's own order: {source_orders()})")
    data.set_defaults(run=cmd_data)

    train = commands.add_parser("train", help="train a model")
    train.add_argument("--config", help="YAML recipe: a file, or a shipped recipe by name, e.g. seed_recipe "
                       "(default: the model's own: configs/<model>.yaml, or configs/<model>_<dataset>.yaml "
                       "where one exists)")
    train.add_argument("--model", help="simple_cnn, improved_cnn or one a plugin registers ($MNIST_CLASSIFIER_PLUGINS) "
                       "(default: the recipe's, else simple_cnn)")
    train.add_argument("--epochs", type=int, help="passes over the training set (default: from the recipe)")
    train.add_argument("--batch-size", type=int, help="images per step (default: from the recipe)")
    train.add_argument("--lr", type=float, help="peak learning rate (default: from the recipe)")
    train.add_argument("--weight-decay", type=float, help="weight decay (default: from the recipe)")
    train.add_argument("--seed", type=int, help="random seed (default: the recipe's; 42 in the shipped ones)")
    train.add_argument("--limit-train", type=int, help="train on the first N images only (default: all)")
    train.add_argument("--device", choices=DEVICES, help="default: auto (CUDA, then Apple MPS, then Intel XPU, else CPU)")
    train.add_argument("--precision", choices=PRECISIONS,
                       help="default: auto (bf16 autocast where the hardware computes bf16 natively, else fp32)")
    train.add_argument("--resume", help="continue from a <model>_last.pth checkpoint (default: none, a new run)")
    train.add_argument("--save-dir", help="checkpoint folder (default: the recipe's, else models)")
    train.add_argument("--log-dir", help="TensorBoard folder (default: the recipe's, else runs)")
    add_data_flags(train, defaults=False, recipe=True)
    train.set_defaults(run=cmd_train)

    evaluate = commands.add_parser("evaluate", help="test-set metrics, figures and report.html for a checkpoint")
    evaluate.add_argument("--checkpoint", help=f"model to evaluate (default: {DEFAULT_CHECKPOINT}, or the model "
                          "bundled in the package when there is none, which `bundled` names)")
    evaluate.add_argument("--out", help="report folder (default: reports/<model_name>, with _<dataset> for a dataset "
                          "other than MNIST, _tta, _ensemble<N> or _user-digits as the case may be)")
    evaluate.add_argument("--data-dir", default="data", help="dataset folder (default: data)")
    evaluate.add_argument("--dataset", help="test set to score (default: the one the checkpoint was trained on; "
                          "another one is refused), or user-digits: the drawings labelled in the demos, "
                          "in <data-dir>/user")
    evaluate.add_argument("--user-data", help="with --dataset user-digits: the folder of your labelled drawings "
                          "(default: <data-dir>/user)")
    evaluate.add_argument("--tta", action="store_true",
                          help="test-time augmentation: average over the image and 4 one-pixel shifts (5x the work), "
                          "and their mirrors where training mirrored (clothes: 10x); default: off, each image once")
    evaluate.add_argument("--ensemble", nargs="+", metavar="CHECKPOINT",
                          help="average the probabilities of these checkpoints (instead of --checkpoint; "
                          "default: none, one model)")
    evaluate.set_defaults(run=cmd_evaluate)

    predict = commands.add_parser("predict",
                                  help="classify image files (PNG/JPEG, up to 4096 px a side, either polarity)")
    predict.add_argument("images", nargs="+", metavar="IMAGE",
                         help="image files to classify; a folder stands for the images directly in it")
    predict.add_argument("--checkpoint", help=ANSWERING_MODEL_HELP)
    predict.add_argument("--json", action="store_true", help="print a JSON array, one object per file (default: text lines)")
    predict.add_argument("--top", type=int, default=3, help="how many ranked classes to show per file (default: 3)")
    add_reject_flag(predict)
    predict.set_defaults(run=cmd_predict)

    calibrate = commands.add_parser(
        "calibrate", help="fit the temperature and the 'not a digit' threshold of an existing checkpoint")
    calibrate.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT,
                           help=f"checkpoint to calibrate, rewritten in place (default: {DEFAULT_CHECKPOINT})")
    calibrate.add_argument("--data-dir", default="data", help="dataset folder (default: data)")
    calibrate.set_defaults(run=cmd_calibrate)

    export = commands.add_parser("export", help="a deployable ONNX model, checked against PyTorch")
    export.add_argument("--checkpoint", help=f"model to export (default: {DEFAULT_CHECKPOINT}, or the model "
                        "bundled in the package when there is none, which `bundled` names)")
    export.add_argument("--format", default="onnx", choices=("onnx",), help="output format (default: onnx)")
    export.add_argument("--out", help="output .onnx file (default: beside the checkpoint, its name with .onnx; "
                        "models/simple_cnn.onnx for the bundled model)")
    export.add_argument("--data-dir", default="data", help="dataset folder, for the self-check (default: data)")
    export.set_defaults(run=cmd_export)

    demo = commands.add_parser("demo", help="the OpenCV real-time drawing window")
    demo.add_argument("--checkpoint", help=ANSWERING_MODEL_HELP)
    add_reject_flag(demo)
    add_collect_flags(demo)
    demo.set_defaults(run=cmd_demo)

    serve = commands.add_parser("serve", help="the browser drawing demo and the JSON API")
    serve.add_argument("--checkpoint", help=ANSWERING_MODEL_HELP)
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0 exposes it)")
    serve.add_argument("--port", type=int, default=8000, help="TCP port (default: 8000)")
    serve.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                       help="a name a reverse proxy serves the page as (e.g. digits.example.org): its pages may "
                       "send drawings; repeat for several (default: none, only this machine's own names)")
    serve.add_argument("--workers", type=int,
                       help="server processes sharing the port, each with its own model "
                       "(default: one per CPU core, the most requests/s measured; at most 4 per core)")
    serve.add_argument("--backend", default="auto", choices=("auto", "onnx", "torch"),
                       help="auto (default): a .pth is served through its ONNX export, made on first use and "
                       "cached beside it (PyTorch when the export fails); onnx: the same, or an error; torch: as is")
    serve.add_argument("--data-dir", default="data", help="test images that check a new ONNX export (default: data)")
    add_reject_flag(serve)
    add_collect_flags(serve)
    serve.set_defaults(run=cmd_serve)

    finetune = commands.add_parser("finetune", help="learn your labelled drawings (saved from the demos) on top of a model")
    finetune.add_argument("--checkpoint",
                          help=f"model to start from, never overwritten (default: {DEFAULT_CHECKPOINT}, or the "
                          "model bundled in the package when there is none, which `bundled` names)")
    finetune.add_argument("--user-data", default=DEFAULT_USER_DATA,
                          help=f"the labelled drawings (default: {DEFAULT_USER_DATA})")
    finetune.add_argument("--data-dir", default="data", help="MNIST folder, replayed so nothing is forgotten (default: data)")
    finetune.add_argument("--epochs", type=int, default=None, help="passes over your examples (default: chosen by their count)")
    finetune.add_argument("--seed", type=int, default=0, help="which examples are held back to measure, and the shuffling (default: 0)")
    finetune.add_argument("--out", help="where to write the tuned model (default: models/<model>_user_best.pth)")
    finetune.set_defaults(run=cmd_finetune)
    return parser


def add_collect_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--user-data", default=DEFAULT_USER_DATA,
                        help=f"where drawings you label are saved, for `finetune` (default: {DEFAULT_USER_DATA})")
    parser.add_argument("--no-collect", action="store_true",
                        help="no labelling: nothing you draw is saved (default: labelling on)")


def add_data_flags(parser: argparse.ArgumentParser, defaults: bool = True, recipe: bool = False) -> None:
    """--data-dir and --dataset; `recipe`: a --config recipe may set them (train), so the flags default to None."""
    fallback = "the recipe's, else " if recipe else ""
    parser.add_argument("--data-dir", default="data" if defaults else None,
                        help=f"dataset folder (default: {fallback}data)")
    parser.add_argument("--dataset", default="mnist" if defaults else None,
                        help=f"{' or '.join(DATASETS)} (default: {fallback}mnist)")


def add_reject_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reject-threshold", type=reject_threshold, default="stored", metavar="F|none",
                        help="answer 'not a digit' when the drawing's digit score is below F, or when its "
                        "strokes are too thick for its size (lower refuses less; 'none' never refuses) (default: "
                        "the threshold stored with the model, which lets 99.5%% of validation digits through, as "
                        "written and re-drawn with an even pen)")


def reject_threshold(text: str) -> float | str | None:
    """--reject-threshold, read by the rule load(reject_threshold=...) shares ("stored": the default)."""
    from .calibration import reject_threshold_setting

    try:
        return reject_threshold_setting(text)
    except UserError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def source_orders() -> str:
    return "; ".join(f"{name} {', '.join(spec.sources)}" for name, spec in DATASETS.items())


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(_negative_values_joined(sys.argv[1:] if argv is None else argv))
    hide_image_size_warning()
    try:
        import_plugins()  # models and metrics registered outside the package
        return args.run(args)
    except UserError as error:
        # Under torchrun every rank meets it and one says so; but rank 0 may be the process a PeerLost lost
        if os.environ.get("RANK", "0") == "0" or getattr(error, "every_rank", False):
            print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except BrokenPipeError:  # `predict ... | head` closed the pipe: stop quietly, as `ls | head` does
        return stop_writing_to_closed_pipe()
    except OSError as error:  # a place we may not write (read-only, full, a folder where a file goes)
        where = f" {error.filename}" if error.filename else ""
        print(f"error: cannot use{where}: {error.strerror or error}; check the path, its permissions and "
              "free space, or choose another place", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # commands with work worth keeping (train, finetune) say more themselves
        print("error: interrupted (Ctrl-C)", file=sys.stderr)
        return INTERRUPTED_EXIT
    finally:
        if os.environ.get("WORLD_SIZE", "1") != "1":
            # What a torchrun rank leaves in reference cycles (an error's traceback holding the trainer)
            # was otherwise freed at interpreter exit, where gloo's native threads aborted the process
            # (SIGABRT after its one-line error, 12 of 35 refused runs): freed now, while Python runs.
            gc.collect()


def _negative_values_joined(argv: list[str]) -> list[str]:
    """`--reject-threshold -1e3` as `--reject-threshold=-1e3`: argparse reads "-1.5" after an option
    as its value, but "-1e3" or "-inf" as an unknown option, and then says the value is missing."""
    joined = list(argv)
    end = joined.index("--") if "--" in joined else len(joined)  # after it, only file names
    for index in range(end - 2, -1, -1):
        flag = joined[index]  # argparse takes any unambiguous start of the name too
        if len(flag) > 4 and "--reject-threshold".startswith(flag) and joined[index + 1].startswith("-"):
            try:
                float(joined[index + 1])
            except ValueError:
                continue
            joined[index:index + 2] = [f"{flag}={joined[index + 1]}"]
    return joined


SIGPIPE_EXIT = 128 + 13  # what a shell reports for a process that SIGPIPE ended


def stop_writing_to_closed_pipe() -> int:
    """Point stdout at /dev/null, so that Python's flush at exit does not raise again."""
    with suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return SIGPIPE_EXIT


if __name__ == "__main__":
    sys.exit(main())
