"""vatt-gh: VATT pre-training with cross-modality gradient harmonization.

Module map (imports go one way: tools -> configs, finetuning -> loop -> trainer -> models,
losses, harmonize, data; tests/test_imports.py checks there is no cycle):
  harmonize       pure gradient maths of the paper (Algorithms 1-2, Sec. 4.4, baselines); no Keras
  per_example     per-example statistics from each layer's inputs and output gradients
  losses          NCE (video-audio) and MIL-NCE (video-text) over the global batch
  models/         VATT-MA / VATT-MS backbones, tokenizers, FAC head
  data/           TFRecord schema, tf.data pipelines, synthetic triplets
  trainer         the Keras model whose train_step wires the above together
  errors          ConfigError, TrainingError, LaunchError (no TensorFlow)
  cluster         tf.distribute start-up, the chief, workers, a chief barrier
  checkpoints     checkpoint managers, set-aside of unreadable ones, restore, load_pretrained
  provision       the run directory check, the data config, the demo's synthetic data
  summaries       host-side TensorBoard summaries, the operative gin config
  loop            the one training loop (exact resume, pre-emption) and the pre-training run
  finetuning      fine-tuning the pre-trained backbone on that loop, then top-1 / top-5
  configs         gin parsing (registers every configurable), open_run for evaluation tools
  strategy_flags  the tools' --strategy flags (absl only at import)
  evaluation/     retrieval, probes, fine-tuning, conflict inspection, figures
"""
