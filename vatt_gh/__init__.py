"""vatt-gh: VATT pre-training with cross-modality gradient harmonization.

Module map (imports go one way: tools -> trainer -> models, losses, harmonize, data):
  harmonize   pure gradient maths of the paper (Algorithms 1-2, Sec. 4.4, baselines); no Keras
  losses      NCE (video-audio) and MIL-NCE (video-text) over the global batch
  models/     VATT-MA / VATT-MS backbones, tokenizers, FAC head
  data/       TFRecord schema, tf.data pipelines, synthetic triplets
  trainer     the Keras model whose train_step wires the above together
"""
