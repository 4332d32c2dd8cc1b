"""Trains an SGE-ResNet with the paper's recipe, on one machine or several.

With no `--data`, trains SGE-ResNet-18 at 32x32 on scikit-learn's
handwritten digits (shipped inside its wheel) for a few epochs: a complete
run in minutes on a laptop CPU. With `--data DIR` (an ImageNet-layout
folder), trains SGE-ResNet-50 with the paper's recipe.

    python examples/train.py                        # digits, ~1 minute
    python examples/train.py --data /imagenet       # every visible GPU
    python examples/train.py --cpu-devices 2        # mirrored, no GPU

`--arch keras:NAME` fine-tunes a keras.applications network instead (e.g.
`keras:ResNet50V2`, `keras:EfficientNetB0`), from `--weights`, its
ImageNet weights file (with or without its top): SGE goes on every
residual branch, keeping the pretrained function at insertion, and the
images are scaled as that network's `preprocess_input` does, in training
and in the export. `--groups none` fine-tunes the network without SGE.

    python examples/train.py --data DIR --arch keras:ResNet50V2 \
        --weights resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5

Several machines: set `TF_CONFIG` on each (see the README) and run the same
command everywhere. A killed run resumes from its last backup when started
again with the same `--output-dir`, which is bound to the run's model and
data (`<output-dir>/run.json`): a rerun with another architecture, image
size or classes is refused rather than mixed with it. If a worker is lost,
the others stop within seconds, saying which worker, at which step, and
which backup the rerun will resume from; TensorFlow's own log of it is in
`<output-dir>/logs/`.

At the end the script evaluates, saves `model.keras` and exports a
SavedModel that serves raw JPEG/PNG bytes or uint8 images without keras_sge.
"""

import functools
import json
import os
import sys
import time
import traceback

# The scripts' TensorFlow-only pieces are the `examples` package of this
# clone (not installed with keras_sge): put the clone on the path.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from examples.training import cli  # noqa: E402

# tf.distribute and the SavedModel export need the TensorFlow backend.
os.environ["KERAS_BACKEND"] = "tensorflow"
cli.tensorflow_defaults()

import keras  # noqa: E402

from examples.training import backup  # noqa: E402
from examples.training import cluttered  # noqa: E402
from examples.training import data  # noqa: E402
from examples.training import distribute  # noqa: E402
from examples.training import export  # noqa: E402
from examples.training import finetune  # noqa: E402
from examples.training import keras_apps  # noqa: E402
from examples.training import loop  # noqa: E402
from examples.training import options  # noqa: E402
from examples.training import recipe  # noqa: E402
from examples.training import rundir  # noqa: E402
from keras_sge.applications import weights as weights_lib  # noqa: E402
from keras_sge.applications.checkpoint_model import checkpoint_architecture  # noqa: E402


def build_parser():
    """train.py's argument parser (its options: examples/training/options.py)."""
    return options.build_parser(description=__doc__.split("\n\n")[0])


def parse_args(argv=None):
    """Parses `argv`, fills the data-dependent defaults, checks the values.

    Every check that needs no data runs here, before any work: a wrong
    value ends the script in one line naming the option, the value and
    what it must be.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.weights and os.path.isfile(args.weights):
        if keras_apps.is_keras_arch(args.arch):
            _check_keras_weights_or_exit(parser, args)
        else:
            _read_weights_or_exit(parser, args)
    options.fill_defaults(args)
    for message in options.invalid_values(args):
        parser.error(message)
    if args.output_dir is None:
        args.output_dir = options.default_output_dir(args)
    problem = options.output_dir_problem(args.output_dir)
    if problem:
        parser.error(problem)
    return args


def _read_weights_or_exit(parser, args):
    """Reads `--weights` now (a checkpoint's depth is the default `--arch`).

    A file that cannot be read ends the script in one line.
    """
    try:
        weights_file(args.weights).classes  # Reads the file.
        if args.arch is None:
            args.arch = checkpoint_arch(args.weights)
    except Exception as error:  # Each format's library raises its own types.
        parser.error(
            f"--weights {args.weights} cannot be read ({_first_line(error)}): "
            "pass a Keras weights file (.keras, .weights.h5) or a PyTorch "
            "checkpoint of an SGE-ResNet (.pth, .pth.tar)"
        )


def _check_keras_weights_or_exit(parser, args):
    """Refuses, in one line, a `--weights` that no keras:NAME can load."""
    try:
        is_keras = weights_lib.is_keras_weights_file(args.weights)
    except OSError as error:
        parser.error(f"--weights {args.weights} cannot be read ({error})")
    if not is_keras:
        parser.error(
            f"--weights {args.weights} is not a Keras weights file: --arch "
            f"{args.arch} takes that network's .h5, .weights.h5 or .keras "
            "file (a PyTorch checkpoint is for --arch resnetN)"
        )


def _first_line(error):
    lines = str(error).strip().splitlines()
    return lines[0].rstrip(".") if lines else type(error).__name__


@functools.lru_cache(maxsize=1)
def weights_file(path):
    """`--weights`, read once however often the script asks."""
    return weights_lib.WeightsFile(path)


def checkpoint_arch(path):
    """`--arch` for a PyTorch checkpoint given as `--weights` (None for a Keras file)."""
    weights = weights_file(path)
    if weights.is_keras:
        return None
    return f"resnet{checkpoint_architecture(weights)['depth']}"


def run_settings(args):
    """What a run directory is bound to: the settings that make the model or the data.

    A resumed run may change the others: the epochs (to extend it), the
    recipe (learning rates, batch), the replicas, threads, verbosity.
    """
    settings = {
        "--arch": args.arch,
        "--groups": "none" if args.groups is None else args.groups,
        "--image-size": args.image_size,
        # Mixed float16 gives the optimizer loss-scale variables.
        "--mixed-precision": args.mixed_precision or "off",
    }
    if not args.data:
        return {**settings, "data": args.dataset}
    settings["data"] = "image folder"
    settings["classes"] = list(data.folder_classes(args.data))
    if not data.is_imagenet_layout(args.data):
        # The seed draws the val split: another would train on val images.
        settings["val split"] = (
            f"{args.val_fraction:g} of each class, --seed {args.seed}"
        )
    return settings


def backup_dir(args):
    return os.path.join(args.output_dir, "backup")


def check_run_directory(args):
    """Refuses, before any work, a run directory this command must not use.

    Returns the settings to bind it to (None for `--evaluate-only
    --weights`, which evaluates a file and leaves the directory alone).
    """
    if args.evaluate_only and args.weights:
        return None
    if args.evaluate_only and args.fresh:
        raise ValueError(
            "--evaluate-only --fresh has no model to evaluate: pass --weights "
            "FILE, or leave out --fresh to evaluate the run's last backup"
        )
    if args.evaluate_only and not backup.has_backups(backup_dir(args)):
        raise ValueError(
            "--evaluate-only needs a trained model, and there is no backup "
            f"in {backup_dir(args)}: pass --weights FILE, or the --output-dir "
            "of a run"
        )
    settings = run_settings(args)
    if not args.fresh:
        # Runs recorded before `--groups none` existed hold 0 for it.
        rundir.check(
            args.output_dir, settings, respelled={"--groups": {0: "none"}}
        )
    return settings


def load_data(args):
    if not args.data:
        if args.dataset == "cluttered-digits":
            return cluttered.load_cluttered_digits(args.image_size)
        return data.load_digits(args.image_size)
    dataset = data.scan_image_folder(
        args.data,
        output_dir=args.output_dir,
        bad_images=args.bad_images,
        max_bad_fraction=args.max_bad_fraction,
        val_fraction=args.val_fraction,
        seed=args.seed,
    )
    for line in dataset.skipped_lines():
        print(line, flush=True)
    return dataset


def build_model(args, num_classes):
    """The compiled model, its optimizer built; call under strategy.scope()."""
    keras.utils.set_random_seed(args.seed)
    if keras_apps.is_keras_arch(args.arch):
        model = keras_model(args, num_classes)
    else:
        model = sge_resnet(args, num_classes)
    recipe.add_l2_penalty(model, args.weight_decay)
    peak_lr = recipe.scaled_learning_rate(args.batch_size, args.base_lr)
    head_steps = args.head_epochs * args.steps_per_epoch
    schedule = recipe.learning_rate_schedule(
        peak_lr,
        args.steps_per_epoch,
        args.epochs - args.head_epochs,
        args.lr_schedule,
        args.lr_decay_epochs,
        args.warmup_epochs,
    )
    if head_steps:
        schedule = recipe.HeadFirst(
            recipe.scaled_learning_rate(args.batch_size, args.head_lr),
            head_steps,
            schedule,
        )
    recipe.compile_model(
        model,
        recipe.sgd(schedule, args.momentum, args.decoupled_weight_decay),
        args.label_smoothing,
    )
    model.optimizer.build(model.trainable_variables)
    head = (
        f"; head learning rate "
        f"{recipe.scaled_learning_rate(args.batch_size, args.head_lr):g} "
        f"(epochs 1-{args.head_epochs})"
        if head_steps
        else ""
    )
    print(
        f"Model: {model.name}, {model.count_params():,} parameters; "
        f"peak learning rate {peak_lr:g}{head}"
    )
    return model


def sge_resnet(args, num_classes):
    """The run's SGE-ResNet, its `--weights` loaded."""
    model = architecture(args, num_classes)
    if args.weights and args.evaluate_only:
        weights_lib.load_weights(
            model, weights_file(args.weights)
        )  # The classifier must fit.
    elif args.weights:
        print(
            finetune.load_pretrained(
                model,
                weights_file(args.weights),
                lambda classes: architecture(args, classes),
            ),
            flush=True,
        )
    return model


def keras_model(args, num_classes):
    """The run's keras.applications network with SGE, its `--weights` loaded.

    Fine-tuning, `--weights` is the plain network's file; evaluating, a
    file of the fine-tuned model (a run's `model.keras`).
    """
    fine_tuning = args.weights and not args.evaluate_only
    model, description = keras_apps.build(
        args.arch,
        args.image_size,
        num_classes,
        args.groups,
        weights=args.weights if fine_tuning else None,
    )
    if args.weights and args.evaluate_only:
        keras_apps.load_trained(model, args.weights, args.arch)
        description = (
            f"Loaded all {len(model.weights)} weights of {model.name} from "
            f"{args.weights}"
        )
    print(description, flush=True)
    print(
        f"Input scaling: as {keras_apps.preprocess_function(args.arch)}, "
        "in training, evaluation and the SavedModel",
        flush=True,
    )
    return model


def architecture(args, classes):
    """The run's SGE-ResNet, randomly initialised; `classes=None`: no classifier."""
    return options.ARCHS[args.arch](
        include_top=classes is not None,
        input_shape=(args.image_size, args.image_size, 3),
        classes=classes or 1000,
        groups=args.groups,
        synchronized_bn=args.sync_bn,
    )


def input_preprocessing(args):
    """How the model wants its pixels scaled (see `data.preprocess`)."""
    if keras_apps.is_keras_arch(args.arch):
        return keras_apps.preprocessing(args.arch)
    return "torch"  # The SGE-ResNets': ImageNet mean and std.


def make_inputs(args, dataset, strategy):
    """The run's distributed training stream and validation set."""
    pipeline = data.Pipeline(
        image_size=args.image_size,
        num_classes=len(dataset.class_names),
        seed=args.seed,
        crop_scale=None if args.crop_scale == 1 else (args.crop_scale, 1.0),
        flip=args.flip,
        cache_bytes=int(args.cache_mb * 2**20),
        preprocessing=input_preprocessing(args),
    )

    def train_data(start_step):
        def dataset_fn(context):
            print(
                f"Input pipeline {context.input_pipeline_id} of {context.num_input_pipelines}: "
                "per-replica batch "
                f"{context.get_per_replica_batch_size(args.batch_size)}, "
                f"from step {start_step}",
                flush=True,
            )
            return pipeline.train(
                dataset.train,
                context,
                args.batch_size,
                args.steps_per_epoch,
                start_step,
            )

        return strategy.distribute_datasets_from_function(dataset_fn)

    val_data = strategy.distribute_datasets_from_function(
        lambda context: pipeline.evaluate(dataset.val, context, args.batch_size)
    )
    return loop.Inputs(
        train_data,
        val_data,
        args.steps_per_epoch,
        data.eval_steps(len(dataset.val), args.batch_size),
        args.batch_size // strategy.num_replicas_in_sync,
    )


def chief_callbacks(args, progress, best):
    """Callbacks writing the run's shared files: the chief's alone.

    `best` is the best val accuracy before a resume (-inf if none), so a
    resumed run only replaces `best.keras` with a better model.
    """
    start_step = progress.step
    return [
        EpochSteps(progress),
        keras.callbacks.ModelCheckpoint(
            os.path.join(args.output_dir, "best.keras"),
            monitor="val_accuracy",
            mode="max",
            save_best_only=True,
            initial_value_threshold=best if best > -float("inf") else None,
        ),
        keras.callbacks.CSVLogger(
            os.path.join(args.output_dir, "log.csv"), append=start_step > 0
        ),
        keras.callbacks.TensorBoard(
            os.path.join(args.output_dir, "tensorboard")
        ),
    ]


def setup(args):
    """Everything that may fail on bad input, before any long work."""
    distribute.configure_runtime(args.cpu_devices, args.threads)
    dataset = load_data(args)
    if args.mixed_precision:
        keras.config.set_dtype_policy(f"mixed_{args.mixed_precision}")
    strategy = distribute.make_strategy(args.cpu_devices)
    print(distribute.describe(strategy), flush=True)
    if distribute.no_gpu_note():
        print(distribute.no_gpu_note())
    print(f"Data: {dataset.describe()}")
    distribute.check_global_batch(
        args.batch_size, strategy.num_replicas_in_sync
    )
    fit_steps_to_data(args, len(dataset.train), strategy.num_replicas_in_sync)
    with strategy.scope():
        model = build_model(args, len(dataset.class_names))
    return (
        dataset,
        strategy,
        model,
        distribute.ReplicaStatistics(model, strategy),
    )


def fit_steps_to_data(args, images, replicas):
    """Sets the batch and the steps per epoch for `images` training images.

    A default batch larger than a small folder is capped at what it holds
    (whole per-replica batches); a batch the user set is refused instead,
    naming one that fits. Evaluating alone trains on nothing.
    """
    fits = images // replicas * replicas
    if args.batch_size > images and not args.evaluate_only:
        if "batch_size" not in args.defaulted or not fits:
            raise ValueError(_batch_too_large(args.batch_size, images, fits))
        print(
            f"Batch size {fits}: the default of {args.batch_size} is more "
            f"than the {images} training images"
        )
        args.batch_size = fits
    max_steps = images // args.batch_size
    if args.evaluate_only:
        args.steps_per_epoch = args.steps_per_epoch or max(1, max_steps)
        return
    if (args.steps_per_epoch or 0) > max_steps:
        raise ValueError(
            f"--steps-per-epoch {args.steps_per_epoch} exceeds one pass over "
            f"the data ({max_steps} steps of {args.batch_size} images): pass "
            f"--steps-per-epoch {max_steps} or less, or leave it out"
        )
    args.steps_per_epoch = args.steps_per_epoch or max_steps


def _batch_too_large(batch, images, fits):
    if fits:
        return (
            f"--batch-size {batch} exceeds the {images} training images: "
            f"pass --batch-size {fits} or less"
        )
    return (
        f"the {images} training images are fewer than the replicas, which "
        "need one each per step: add images, or train on fewer devices"
    )


def prepare_run(args, strategy, model, statistics, settings):
    """Readies the run directory; returns the progress callback.

    Training: restores the last backup (if any), then binds the directory
    to the run's settings. `--evaluate-only` returns None, having restored
    the last backup when there is no `--weights` to evaluate.
    """
    if args.evaluate_only:
        if not args.weights:
            restore_to_evaluate(args, strategy, model, statistics)
        return None
    os.makedirs(args.output_dir, exist_ok=True)
    progress = start_training(args, strategy, model, statistics)
    rundir.record(args.output_dir, settings)
    return progress


def restore_to_evaluate(args, strategy, model, statistics):
    """Loads the run's last backup into `model`, saying which it is."""
    backups = backup.Backup(backup_dir(args), model, strategy, statistics)
    step = backups.restore()
    if not step:  # Under several workers: none that all of them have.
        raise ValueError(
            f"no backup in {backups.directory} to evaluate: pass --weights FILE"
        )
    print(f"Evaluating the backup of step {step} in {backups.directory}")


def start_training(args, strategy, model, statistics):
    """Restores the last backup, if any; returns the backup callback.

    The callback also tracks the run's progress: the global step, and the
    newest backup that every worker has.
    """
    backups = backup.Backup(
        backup_dir(args),
        model,
        strategy,
        statistics,
        discard_existing=args.fresh,
    )
    start_step = 0 if args.fresh else backups.restore()
    if start_step:
        print(
            f"Resumed from backup at step {start_step} "
            f"(epoch {start_step // args.steps_per_epoch + 1}), {backups.directory}"
        )
    return backup.BackupCallback(
        backups, start_step, args.save_steps, args.steps_per_epoch
    )


def train(args, strategy, model, inputs, statistics, progress):
    """Trains from `progress.step` to the end of the run.

    With `--head-epochs`, the classifier alone first, then everything.
    """
    start_step, total = progress.step, args.epochs * args.steps_per_epoch
    if start_step >= total:
        print(already_complete(args, start_step, total), flush=True)
        return
    callbacks = [
        # First: it raises before a backup or best.keras is written from
        # the weights of a step whose loss is NaN.
        loop.StopOnNonFiniteLoss(lambda: progress.step),
        progress,
        distribute.AverageReplicaStatistics(statistics),
    ]
    if distribute.is_chief(strategy):
        callbacks += chief_callbacks(
            args, progress, float(progress.backup.best.numpy())
        )
    start = time.time()
    head_steps = args.head_epochs * args.steps_per_epoch
    if start_step < head_steps:
        print(
            f"Epochs 1-{args.head_epochs}: the classifier alone, the rest of the network frozen",
            flush=True,
        )
        set_trainable(args, strategy, model, finetune.freeze_backbone)
        loop.train(
            model,
            strategy,
            inputs,
            args.head_epochs,
            start_step,
            callbacks,
            args.verbose,
        )
        for callback in callbacks:  # The next `fit` continues the same log.
            if isinstance(callback, keras.callbacks.CSVLogger):
                callback.append = True
        set_trainable(args, strategy, model, finetune.unfreeze)
    if progress.step < total:
        if head_steps:
            print(
                f"Epochs {args.head_epochs + 1}-{args.epochs}: the whole network",
                flush=True,
            )
        loop.train(
            model,
            strategy,
            inputs,
            args.epochs,
            progress.step,
            callbacks,
            args.verbose,
        )
    print(f"Trained steps {start_step}-{total} in {time.time() - start:.1f} s")


def already_complete(args, step, total):
    """The line for a rerun of a run that has no step left to train."""
    past = (
        ""
        if step == total
        else f" (past step {total}, the end of --epochs {args.epochs})"
    )
    return (
        f"Already complete at step {step}{past}: nothing to train; pass "
        f"--epochs {step // args.steps_per_epoch + 1} or more to extend it, "
        "or --fresh to start over"
    )


def non_finite_message(args, error, progress):
    """One line for training stopped by a NaN loss: what is kept, what to do."""
    head_steps = args.head_epochs * args.steps_per_epoch
    option, rate = (
        ("--head-lr", args.head_lr)
        if error.step <= head_steps
        else ("--base-lr", args.base_lr)
    )
    saved = progress.unconfirmed_step or progress.common_step
    # The loss of a step is that of the weights before it: the backup just
    # before may already hold diverging weights.
    kept = (
        f"the backups up to step {saved} are kept (the last may already be "
        f"diverging): lower {option} (now {rate:g}) and rerun to resume, or "
        "add --fresh to start over"
        if saved
        else f"no backup was written yet: lower {option} (now {rate:g}) and rerun"
    )
    return (
        f"{error} (epoch {(error.step - 1) // args.steps_per_epoch + 1}): "
        "training stopped, and nothing was saved or exported from the broken "
        f"weights; {kept}"
    )


def set_trainable(args, strategy, model, change):
    """Applies `change` to the layers' `trainable` flags, and recompiles.

    Keras traces the training step with the trainable variables of the
    moment; the optimizer, its slots and its step count carry over.
    """
    with strategy.scope():
        change(model)
        recipe.compile_model(model, model.optimizer, args.label_smoothing)


class EpochSteps(keras.callbacks.Callback):
    """Logs `train_steps`: how many steps an epoch's training metrics cover.

    Keras's metrics restart with every `fit`, so an epoch resumed mid-way
    reports the steps after the resume only: its row shows fewer than
    `--steps-per-epoch`.
    """

    def __init__(self, progress):
        super().__init__()
        self.progress = progress
        self.first_step = progress.step

    def on_epoch_begin(self, epoch, logs=None):
        self.first_step = self.progress.step

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["train_steps"] = self.progress.step - self.first_step


def finish(args, dataset, strategy, model, inputs, statistics):
    """Evaluates; the chief saves the model and exports the SavedModel.

    The replicas' BatchNormalization statistics are averaged first, so the
    model evaluated and saved is the same on every worker.
    """
    statistics.average()
    report(loop.evaluate(model, strategy, inputs, verbose=args.verbose))
    if not distribute.is_chief(strategy):
        return
    keras_path = os.path.join(args.output_dir, "model.keras")
    model.save(keras_path)
    saved_model = os.path.join(args.output_dir, "saved_model")
    export.export_saved_model(
        model,
        saved_model,
        dataset.class_names,
        args.image_size,
        input_preprocessing(args),
    )
    print("Wrote:")
    for what, path in [
        ("final model", keras_path),
        ("best model", os.path.join(args.output_dir, "best.keras")),
        ("SavedModel (serves encoded images or uint8 batches)", saved_model),
        ("per-epoch CSV log", os.path.join(args.output_dir, "log.csv")),
        ("TensorBoard logs", os.path.join(args.output_dir, "tensorboard")),
        ("backups", os.path.join(args.output_dir, "backup")),
    ]:
        print(f"  {what}: {os.path.abspath(path)}")


def report(results):
    print(
        "Validation: "
        + ", ".join(f"{name} {value:.4f}" for name, value in results.items()),
        flush=True,
    )


def runtime_log(args):
    """Where this worker's TensorFlow runtime log goes under several workers."""
    task = json.loads(os.environ["TF_CONFIG"])["task"]
    return os.path.join(
        args.output_dir, "logs", f"{task['type']}-{task['index']}.log"
    )


def report_lost_peer(args, strategy, error, progress):
    """One line on the console; the traceback goes to the runtime log."""
    total = args.epochs * args.steps_per_epoch
    where = (
        f"at step {progress.step + 1}"
        if progress.step < total
        else f"after the last step ({total})"
    )
    peer = distribute.describe_lost_peer(error, strategy)
    if progress.unconfirmed_step:
        backups = (
            f"is step {progress.unconfirmed_step} if {peer} finished saving it, "
            f"else step {progress.common_step}"
        )
    else:
        backups = (
            f"is step {progress.common_step}"
            if progress.common_step
            else "is none (step 0)"
        )
    resume = (
        f"the last backup all workers have {backups}; "
        "rerun the same command on every worker to resume from it"
    )
    with open(runtime_log(args), "a") as log:
        traceback.print_exception(error, file=log)
    print(
        f"train.py: error: lost {peer} {where}; {resume} (details: {runtime_log(args)})",
        file=sys.stderr,
    )


def main(argv=None):
    args = parse_args(argv)
    if distribute.cluster_size() > 1:
        distribute.send_runtime_log_to(runtime_log(args))
    try:
        settings = check_run_directory(args)
        dataset, strategy, model, statistics = setup(args)
        progress = prepare_run(args, strategy, model, statistics, settings)
    except (ValueError, OSError) as error:
        # Bad arguments, data or run directory: one line, not a traceback.
        print(f"train.py: error: {str(error).splitlines()[0]}", file=sys.stderr)
        return 2
    inputs = make_inputs(args, dataset, strategy)
    if args.evaluate_only:
        report(loop.evaluate(model, strategy, inputs, verbose=args.verbose))
        return distribute.end_run(strategy, 0)
    try:
        train(args, strategy, model, inputs, statistics, progress)
        finish(args, dataset, strategy, model, inputs, statistics)
    except loop.NonFiniteLoss as error:
        print(
            f"train.py: error: {non_finite_message(args, error, progress)}",
            file=sys.stderr,
        )
        if distribute.is_multi_worker(strategy):
            distribute.exit_now(1)  # Every worker saw the same global loss.
        return 1
    except distribute.PEER_FAILURES as error:
        if not distribute.is_multi_worker(strategy):
            raise
        report_lost_peer(args, strategy, error, progress)
        distribute.exit_now(3)
    return distribute.end_run(strategy, 0)


if __name__ == "__main__":
    sys.exit(main())
