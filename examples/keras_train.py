"""Train a small Keras classifier on the CPU, offline, and track its energy per step.

Run:  python examples/keras_train.py [--output-dir runs/keras] [--epochs 5]

Keras runs on the torch backend unless KERAS_BACKEND says otherwise (the callback has no backend
code: tensorflow and jax work the same). The model trains on synthetic data with a validation
split, then evaluates and predicts; each of the three calls is tracked as its own run. Energy
metrics show in the progress bar, in ``history.history`` and, when TensorFlow is installed, in
Keras's TensorBoard logs under <output-dir>/tensorboard (the TensorBoard callback is listed first on
purpose: the energy callback moves itself ahead of it). Reports: <output-dir>/wattwise/ for fit,
<output-dir>/evaluate/wattwise/ and <output-dir>/predict/wattwise/.
"""

from __future__ import annotations

import argparse
import importlib.util
import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from wattwise.integrations.keras import EnergyCallback  # noqa: E402


def synthetic_classes(n: int, features: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=2.0, size=(classes, features))
    labels = rng.integers(0, classes, size=n)
    x = centers[labels] + rng.normal(size=(n, features))
    return x.astype("float32"), labels.astype("int32")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", default="runs/keras")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--country", default="FRA", help="ISO3 country code for the carbon intensity")
    cli = parser.parse_args()

    features, classes = 32, 10
    x, y = synthetic_classes(8192, features, classes, seed=0)
    x_test, y_test = synthetic_classes(2048, features, classes, seed=1)
    model = keras.Sequential([
        keras.Input((features,)),
        keras.layers.Dense(256, activation="relu"),
        keras.layers.Dense(256, activation="relu"),
        keras.layers.Dense(classes),
    ])
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )

    energy = EnergyCallback(country_iso_code=cli.country, output_dir=cli.output_dir)
    callbacks: list[keras.callbacks.Callback] = [energy]
    if importlib.util.find_spec("tensorflow"):  # Keras's TensorBoard callback writes through tf.summary
        callbacks.insert(0, keras.callbacks.TensorBoard(os.path.join(cli.output_dir, "tensorboard")))

    history = model.fit(x, y, batch_size=64, epochs=cli.epochs, validation_split=0.2, callbacks=callbacks, verbose=2)
    fitted = energy.report
    model.evaluate(x_test, y_test, batch_size=256, callbacks=[energy], verbose=0)
    evaluated = energy.report
    model.predict(x_test, batch_size=256, callbacks=[energy], verbose=0)
    predicted = energy.report

    print(f"\nper epoch, J/step: {', '.join(f'{v:.3g}' for v in history.history['energy/step_j'])}")
    print(
        f"fit: train {fitted.by_phase['train'].energy_j:.1f} J over {fitted.train_steps} steps, "
        f"validation {fitted.by_phase['eval'].energy_j:.1f} J; "
        f"evaluate {evaluated.energy_j:.2f} J; predict {predicted.energy_j:.2f} J "
        f"({predicted.by_phase['predict'].samples} samples); files under {cli.output_dir}"
    )


if __name__ == "__main__":
    main()
