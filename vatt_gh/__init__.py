"""vatt-gh: VATT pre-training with cross-modality gradient harmonization.

Module map (imports go one way: tools -> configs, finetuning -> loop -> checkpoints, provision
-> trainer -> models, losses, harmonize, data; tests/test_imports.py fails on any cycle):
  harmonize       the paper's module: Harmonization config, linear gamma, each method's weights
                  (Algorithms 1-2, Sec. 4.4, baselines), the step's statistics; no Keras
  harmonized_update  every granularity behind one function: group:N (or replica), one backward
                  pass for sum / reweight, own loss terms (analysis only)
  group_stats/    per-group statistics and update from each layer's inputs and output gradients
  losses          NCE (video-audio) and MIL-NCE (video-text) over the global batch
  models/         VATT-MA / VATT-MS backbones, tokenizers, FAC head
  data/           TFRecord schema, tf.data pipelines, synthetic triplets
  trainer         the Keras model whose train_step wires the above together
  errors          ConfigError, TrainingError, LaunchError (no TensorFlow)
  console         quiet tools, one-line errors, the lines a run prints (no TensorFlow)
  cluster         tf.distribute start-up, the one writer (is_chief), workers, a chief barrier
  input_state     each process's input position, saved next to every checkpoint
  checkpoints     verify, set aside, clean up, restore; pre-emption (exit 42); load_pretrained
  run_lock        one run per run directory: a lock file naming its holder, stale ones taken over
  provision       settings, placeholders, the run directory, the data config, synthetic data
  summaries       host-side TensorBoard summaries, rejected-record totals, the operative config
  loop            the one training loop (exact resume, pre-emption) and the pre-training run
  finetuning      fine-tuning the pre-trained backbone on that loop, then top-1 / top-5
  configs         gin parsing (registers every configurable), open_run for evaluation tools
  strategy_flags  the tools' --strategy flags (absl only at import; cluster starts it)
  evaluation/     retrieval, probes, the fine-tuning recipe, conflict inspection, figures;
                  imports neither the run nor the launch
"""
