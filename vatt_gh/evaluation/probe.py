"""Linear probe on frozen pooled features (paper Section 4.3: UCF101, HMDB51, ESC50).

Each window of a training clip is one training example; a test clip's class probabilities are the
mean over its windows (multi-view testing, `accuracy.average_views`). Features are L2-normalised
per window, then standardised with the training set's mean and variance, and fed to a multinomial
logistic regression (scikit-learn, L-BFGS, L2 penalty `1 / C`).
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
    scaler: Optional[StandardScaler] = None
    classifier: Optional[LogisticRegression] = None

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
        self.classifier = LogisticRegression(
            C=self.regularization, max_iter=self.max_iter, random_state=self.seed
        )
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
    out["num_train_clips"] = int(len(train_labels))
    out["num_test_clips"] = int(len(test_labels))
    return out
