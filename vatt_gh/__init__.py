"""vatt-gh: VATT pre-training with cross-modality gradient harmonization.

Module map (imports go one way: tools -> loop -> trainer -> models, losses, harmonize, data):
  harmonize       the paper's module: Harmonization config, linear gamma, each method's weights
                  (Algorithms 1-2, Sec. 4.4, baselines), the step's statistics; no Keras
  harmonized_update  every granularity behind one function: group:N (or replica), one backward
                  pass for sum / reweight, own loss terms (analysis only)
  group_stats/    per-group statistics and update from each layer's inputs and output gradients
  losses          NCE (video-audio) and MIL-NCE (video-text) over the global batch
  models/         VATT-MA / VATT-MS backbones, tokenizers, FAC head
  data/           TFRecord schema, tf.data pipelines, synthetic triplets
  trainer         the Keras model whose train_step wires the above together
  loop            the pre-training run: data, checkpoints, summaries, exact resume
  launch          gin parsing and tf.distribute start-up; strategy_flags: the tools' flags for it
  evaluation/     retrieval, probes, fine-tuning, conflict inspection, figures
"""
