"""Evaluate a finished run on one split: flat numeric metrics JSON, optional predictions.

The JSON is flat (metric name → number) so ``dvc metrics show`` lists every value as a column,
and strict: a diverged model (NaN or infinite outputs) is an error, never a row of metrics.
"""

from __future__ import annotations

from pathlib import Path

from roaming.atomic import write_json
from roaming.data.splits import load_split
from roaming.errors import DataError, NonFiniteError
from roaming.predict import predict
from roaming.train import load_trained, pick_device


def evaluate(
    run_dir: str | Path,
    data: str | Path,
    split: str,
    out: str | Path,
    *,
    predictions: str | Path | None = None,
    device: str = "auto",
) -> dict[str, float]:
    """Metrics of ``run_dir``'s final model on ``split`` of ``data``, written to ``out``."""
    trainer = load_trained(run_dir, data, pick_device(device))
    samples = load_split(data, split, trainer.tasks.fields).to(trainer.device)
    if len(samples) == 0:
        raise DataError(data, f"split {split!r} is empty: nothing to evaluate")
    try:
        metrics, outputs = predict(
            trainer.model,
            trainer.tasks,
            samples,
            trainer.cfg.batch_size,
            keep_outputs=predictions is not None,
        )
    except NonFiniteError as error:
        raise NonFiniteError(f"{run_dir}: {error} on split {split!r}; no metrics written") from None
    if predictions is not None:
        trainer.tasks.save_predictions(predictions, outputs, samples.targets)
    write_json(out, metrics)
    return metrics
