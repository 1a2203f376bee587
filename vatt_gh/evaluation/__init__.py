"""Evaluation of pre-trained VATT models and the paper's figures (docs/evaluation.md).

Modules, one idea each:
  retrieval   zero-shot video-text retrieval metrics (Recall@K, median rank; pessimistic ties)
  accuracy    top-k accuracy over several views per clip
  run         open a pre-training run: its operative gin, the user's gin, its checkpoint
  features    embeddings / pooled features of a record set through the eval pipeline
  probe       linear probe on frozen features (scikit-learn softmax regression)
  classifier  classifier on the video backbone and the VATT fine-tuning recipe
  conflicts   per-triplet cos(g_va, g_vt) over a record set, top / bottom selection, HTML (Fig. 3)
  histories   the cosine histograms a pre-training run logged, as percentiles over steps (Fig. 4)
  figures     matplotlib plots (Agg): cosine bands, t-SNE, contact sheets (Figs. 3-5)
  results     metrics to JSON, to TensorBoard scalars under eval/, and as console tables
  benchmark_eval  Table 1's protocol on converted benchmarks: features once, per split / fold
  table1      Table 1 as markdown: our row beside the paper's own rows
"""
