"""How hard the offline text sets are for a classical learner: bag-of-words logistic regression
trained on the whole train file, scored on the test file (the figures in tasks/data/README.md;
SmolLM2's come from `hf-icl run eval_configs/text_tasks_card.yaml`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import report  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "tasks" / "data"


def bag_of_words_accuracy(task: str) -> float:
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    train, test = (
        [json.loads(line) for line in (DATA / task / f"{split}.jsonl").read_text().splitlines()]
        for split in ("train", "test")
    )
    vectorizer = CountVectorizer(lowercase=True)
    features = vectorizer.fit_transform([r["text"] for r in train])
    clf = LogisticRegression(max_iter=2000).fit(features, [r["label"] for r in train])
    return float(
        clf.score(vectorizer.transform([r["text"] for r in test]), [r["label"] for r in test])
    )


if __name__ == "__main__":
    report(
        "text_task_difficulty",
        {f"bow_{t}": round(bag_of_words_accuracy(t), 3) for t in ("sentiment", "topic")},
    )
