"""Deployable, reproducible zips of a recipe's model: a classifier's or encoder's (`encoder.py`:
model.onnx, tokenizer, inference config, predict.py) and a language model's (`decoder.py`: the
onnxruntime-genai folder and generate.py), over the deterministic zip entries of `archive.py`.
The encoder's names are re-exported: `from modelmake import package; package.build_package(...)`.
"""
from modelmake.package.encoder import PREDICT_PY, TOKENIZER_FILES, build_package, inference_config, predict_script

__all__ = ["PREDICT_PY", "TOKENIZER_FILES", "build_package", "inference_config", "predict_script"]
