"""twinsearch encoder: preprocessing, backbones, losses, samplers, training, evaluation and calibration.

Composable pieces, one concept per module (after pytorch-metric-learning):

- `preprocess.Preprocess`: decode/convert/resize/normalise, shared by training and serving, saved in the
  model file; `errors`: ImageError (ImageDecodeError, ImageTooLargeError, ImageFormatError), ModelFileError.
- `data`: labelled sources (folder trees, zips, idx files), decoding, splits by class.
- `backbones` (conv4, koch, signet, resnet), `heads` (embedding head, L2-normalised output).
- `losses` (contrastive, triplet with batch-hard/semi-hard mining, prototypical, normalised softmax),
  `samplers` (classic pairs, P x K batches, N-way k-shot episodes), `augment` (affine, elastic, rotations).
- `training` (TrainConfig, Trainer; `training.recipe.train_model`: the whole `twinsearch train` pipeline
  as one call), `runtime` (the model file's ONNX graph, run by ONNX Runtime on CPU), `evaluation` (verification, one-shot, Recall@1, MAP@R, plots),
  `calibration` (thresholds at EER / FAR 1% / FAR 0.1%, probability of "same").
- `model` (EncoderModel, load_model, default_model_path), `card` (ModelCard, read_card without torch).
- `commands.train`, `commands.evaluate`: the `twinsearch train` and `twinsearch evaluate` commands.

Embeddings are float32 rows of unit length; distances are Euclidean, in [0, 2], smaller = more alike.
Importing this package imports nothing heavy; import the submodules you need.
"""
