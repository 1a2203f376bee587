"""vatt-gh: VATT pre-training with cross-modality gradient harmonization (NeurIPS 2022)."""

import setuptools

# The pinned stack (docs/pins.md says why): tensorflow-io's and tensorflow-addons' compiled
# ops load only against TF 2.15; unpinned, pip backtracks into a broken resolution.
INSTALL_REQUIRES = [
    "tensorflow==2.15.1",
    "tf-models-official==2.15.0",
    "tensorflow-text==2.15.0",
    "tensorflow-io==0.36.0",
    "tensorflow-io-gcs-filesystem==0.36.0",
    "tensorflow-addons==0.23.0",
    "gin-config==0.5.0",
    "absl-py>=1.4,<1.5",
    "numpy<2",
    "av>=12",  # PyAV decodes video (tensorflow-io's FFmpeg ops do not load on Debian 12)
    "webvtt-py==0.6.0",  # the builder reads WebVTT / SRT captions (YouTube's ASR) next to videos
    "matplotlib>=3.7",  # figures (headless)
    "scikit-learn>=1.3",  # t-SNE, ROC AUC
    # word2vec: tools/build_word_vectors.py reads a user's word2vec / GloVe file, or trains
    # vectors on the dataset's own narrations (4.4.0 installs with numpy<2 on Python 3.11).
    "gensim==4.4.0",
    # tools/build_dataset.py is an Apache Beam pipeline (DirectRunner here, Dataflow / Flink /
    # Spark at scale). 2.72.0: the newest whose [gcp] extra (Dataflow) still resolves with
    # TensorFlow 2.15's protobuf<5 (docs/pins.md).
    "apache-beam==2.72.0",
]

setuptools.setup(
    name="vatt-gh",
    version="0.1.0",
    description=__doc__,
    # 3.10: the Python of Google's TensorFlow 2.15 TPU VM images, whose preinstalled TPU build
    # of TensorFlow the launcher keeps (vatt_gh/tpu_job.py); every pin has a cp310 wheel.
    python_requires=">=3.10,<3.12",
    packages=setuptools.find_packages(include=["vatt_gh", "vatt_gh.*"]),
    install_requires=INSTALL_REQUIRES,
    extras_require={
        "dev": ["pytest>=8", "pytest-xdist>=3.5", "ruff==0.17.5"],
        # submitting tools/build_dataset.py to Dataflow (GCS staging, the Dataflow client)
        "dataflow": ["apache-beam[gcp]==2.72.0"],
    },
)
