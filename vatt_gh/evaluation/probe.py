"""Linear probe on frozen pooled features (paper Section 4.3: UCF101, HMDB51, ESC50).

Each window of a training clip is one training example; a test clip's class probabilities are the
mean over its windows (multi-view testing, `accuracy.average_views`). Features are L2-normalised
per window, then standardised with the training set's mean and variance, and fed to a multinomial
logistic regression (scikit-learn, L-BFGS, L2 penalty `1 / C`), or, with `classifier="vatt"`, to
VATT's own linear evaluation head: Dense(128) -> Dropout(0.9) -> Dense(classes, softmax, kernel
L2 0.1), Adam at 5e-4, batch 64, `epochs` epochs (VATT: 1000); both are linear in the features.
"""

import dataclasses
from typing import Dict, Optional

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from vatt_gh.evaluation import accuracy
from vatt_gh.evaluation.retrieval import l2_normalize


def _views(features: np.ndarray) -> np.ndarray:
    """(N, D) or (N, V, D) -> (N, V, D)."""
    features = np.asarray(features, np.float64)
    if features.ndim == 2:
        features = features[:, None, :]
    if features.ndim != 3:
        raise ValueError(f"need (clips, D) or (clips, views, D) features, got {features.shape}")
    return features


@dataclasses.dataclass
class LinearProbe:
    """Softmax regression over `num_classes` on standardised, L2-normalised features."""

    num_classes: int
    regularization: float = 1.0  # C of LogisticRegression (inverse L2 strength)
    max_iter: int = 1000
    seed: int = 0
    classifier_kind: str = "logistic"  # or "vatt" (see the module doc)
    epochs: int = 1000  # "vatt" only
    scaler: Optional[StandardScaler] = None
    classifier: Optional[object] = None

    def fit(self, features: np.ndarray, labels: np.ndarray) -> "LinearProbe":
        """(N, [V,] D) features, (N,) labels in [0, num_classes)."""
        views = _views(features)  # (N, V, D)
        labels = np.asarray(labels, np.int64)
        if labels.min() < 0 or labels.max() >= self.num_classes:
            raise ValueError(
                f"training labels must lie in [0, {self.num_classes}); a clip without "
                f"a label has -1 (found [{labels.min()}, {labels.max()}])"
            )
        x = l2_normalize(views).reshape(-1, views.shape[-1])  # (N*V, D)
        y = np.repeat(labels, views.shape[1])  # (N*V,)
        self.scaler = StandardScaler().fit(x)
        if self.classifier_kind == "vatt":
            self.classifier = _VattHead(self.num_classes, self.epochs, self.seed)
        elif self.classifier_kind == "logistic":
            self.classifier = LogisticRegression(
                C=self.regularization, max_iter=self.max_iter, random_state=self.seed
            )
        else:
            raise ValueError(f"classifier {self.classifier_kind!r}: choose 'logistic' or 'vatt'")
        self.classifier.fit(self.scaler.transform(x), y)
        return self

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """(N, [V,] D) -> (N, num_classes) window-averaged probabilities (0 for classes absent
        from the training set)."""
        views = _views(features)
        n, v, d = views.shape
        x = self.scaler.transform(l2_normalize(views).reshape(-1, d))
        seen = self.classifier.predict_proba(x)  # (N*V, seen classes)
        probabilities = np.zeros((n * v, self.num_classes))
        probabilities[:, self.classifier.classes_] = seen
        return accuracy.average_views(probabilities.reshape(n, v, self.num_classes))


class _VattHead:
    """VATT's linear evaluation head (its utils/eval/evaluators.py), sklearn-style."""

    def __init__(self, num_classes: int, epochs: int, seed: int):
        import tensorflow as tf

        tf.keras.utils.set_random_seed(seed)
        self.classes_ = np.arange(num_classes)
        self.epochs = epochs
        self.model = tf.keras.Sequential(
            [
                tf.keras.layers.Dense(128, kernel_initializer="glorot_normal"),
                tf.keras.layers.Dropout(0.9),
                tf.keras.layers.Dense(
                    num_classes,
                    activation="softmax",
                    kernel_initializer="glorot_normal",
                    kernel_regularizer=tf.keras.regularizers.L2(0.1),
                ),
            ]
        )
        self.model.compile(
            optimizer=tf.keras.optimizers.Adam(5e-4), loss="sparse_categorical_crossentropy"
        )

    def fit(self, x: np.ndarray, y: np.ndarray) -> "_VattHead":
        self.model.fit(
            x.astype(np.float32), y, batch_size=64, epochs=self.epochs, shuffle=True, verbose=0
        )
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return self.model.predict(x.astype(np.float32), batch_size=256, verbose=0)


def linear_probe_metrics(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    test_labels: np.ndarray,
    num_classes: Optional[int] = None,
    **probe_kwargs,
) -> Dict[str, float]:
    """Fit on the training clips, score the test clips: {'top1', 'top5', 'train_top1', 'chance'}
    in percent, plus clip counts. num_classes defaults to 1 + the largest label seen."""
    if num_classes is None:
        num_classes = int(max(np.max(train_labels), np.max(test_labels))) + 1
    probe = LinearProbe(num_classes, **probe_kwargs).fit(train_features, train_labels)
    out = accuracy.topk_accuracy(probe.predict_proba(test_features), test_labels)
    out["train_top1"] = accuracy.topk_accuracy(
        probe.predict_proba(train_features), train_labels, (1,)
    )["top1"]
    out["chance"] = 100.0 / num_classes
    out["classifier"] = probe.classifier_kind
    out["num_train_clips"] = int(len(train_labels))
    out["num_test_clips"] = int(len(test_labels))
    return out
