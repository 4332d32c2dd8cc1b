"""Reusable pieces of `examples/train.py`, the SGE-ResNet training script.

- `data`: ImageNet-layout folders and the embedded digits set, and the
  resumable, shardable `tf.data` pipeline.
- `distribute`: strategy selection (`MirroredStrategy`,
  `MultiWorkerMirroredStrategy`, logical CPU devices).
- `recipe`: the paper's optimizer, weight decay and learning-rate schedules.
- `finetune`: a pretrained SGE-ResNet onto new classes, head first.
- `keras_apps`: `--arch keras:NAME`, a keras.applications network with SGE
  inserted into it, its pretrained weights and its input scaling.
- `loop`: `model.fit`, or a custom loop over `strategy.run` where `fit`
  does not work (several workers).
- `backup`: step-level backups that survive `SIGKILL`.
- `rundir`: what a run directory is bound to (`run.json`): a rerun with
  another model or other data is refused.
- `export`: the servable SavedModel.
- `options`: the command line, its options and their help.

These modules need the TensorFlow backend.
"""
