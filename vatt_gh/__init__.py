"""vatt-gh: VATT pre-training with cross-modality gradient harmonization.

Module map, top row first; each module imports only from the rows below its own (the README's
package map; tests/test_imports.py checks it, function-level imports included):
  finetuning      fine-tuning the pre-trained backbone on loop.train, then top-1 / top-5
  configs         gin parsing (registers every configurable); open_run and load_pretrained
  pretraining     `pretrain`: the pre-training run on loop.train
  loop            the one training loop (exact resume, pre-emption, summaries, progress lines)
  provision       settings, placeholders, the run directory, the data config, synthetic data
  summaries       host-side TensorBoard summaries, rejected-record totals, the operative config
  strategy_flags  the tools' --strategy flags (cluster.STRATEGIES; cluster starts the strategy)
  trainer         PretrainModel: its train_step calls harmonized_update (harmonize, losses)
  checkpoints     verify, set aside, clean up, restore; pre-emption (exit 42)
  input_state     each process's input position, saved next to every checkpoint
  evaluation/     retrieval, probes, the fine-tuning recipe, conflict inspection, figures;
                  imports neither the run nor the launch
  harmonized_update  every granularity behind one function: group:N (or replica), one backward
                  pass for sum / reweight, own loss terms (analysis only)
  cluster         tf.distribute start-up, the one writer (is_chief), workers, a chief barrier
                  (TensorFlow imported inside its functions: --help stays fast)
  tpu_job         the Cloud TPU batch job and its restart policy (no TensorFlow)
  run_config      each start's operative config; what a resume may not change
  run_lock        one run per run directory: a lock file naming its holder, stale ones taken over
  console         quiet tools, one-line errors, the lines a run prints (no TensorFlow)
  group_stats/    per-group statistics and update from each layer's inputs and output gradients
  harmonize       the paper's module: Harmonization (parsed once), linear gamma, each method's
                  weights (Algorithms 1-2, Sec. 4.4, baselines), the step's statistics; no Keras
  losses          NCE (video-audio) and MIL-NCE (video-text) over the global batch
  models/         VATT-MA / VATT-MS backbones, tokenizers, FAC head
  data/           TFRecord schema, the tf.data input (one phase per module), synthetic triplets
  errors          ConfigError, TrainingError, LaunchError (no TensorFlow)
"""
