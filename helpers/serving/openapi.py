"""Request-body schemas for the OpenAPI docs of routes that parse bodies themselves."""

from __future__ import annotations

_PIXELS = {
    "description": "Pixels in [0, 1] (0 background, 1 ink): [28, 28], [784], [N, 28, 28] or [N, 784].",
    "type": "array",
    "items": {},
}
_MODEL = {"type": "string", "description": "Model version (SHA-256 or a prefix of 6+ digits); default production."}
_FILES = {"type": "array", "items": {"type": "string", "format": "binary"}, "description": "PNG or JPEG images."}
_METHOD = {"type": "string", "enum": ["saliency", "integrated_gradients"], "default": "integrated_gradients"}
_TARGET = {"type": "integer", "minimum": 0, "maximum": 9, "description": "Class to explain; default the prediction."}
_BINARY = {"type": "string", "format": "binary"}


def _body(json_props: dict, form_props: dict, required: list[str], images: bool) -> dict:
    content = {
        "application/json": {"schema": {"type": "object", "properties": json_props, "required": required}},
        "multipart/form-data": {"schema": {"type": "object", "properties": form_props, "required": ["file"]}},
    }
    if images:
        content["image/png"] = {"schema": _BINARY}
        content["image/jpeg"] = {"schema": _BINARY}
    return {"requestBody": {"required": True, "content": content}}


PREDICT_BODY = _body(
    {"pixels": _PIXELS, "model": _MODEL}, {"file": _FILES, "model": _MODEL}, ["pixels"], images=True
)
EXPLAIN_BODY = _body(
    {"pixels": _PIXELS, "model": _MODEL, "method": _METHOD, "target": _TARGET},
    {"file": _BINARY, "model": _MODEL, "method": _METHOD, "target": _TARGET},
    ["pixels"],
    images=True,
)
ADMIN_REGISTER_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "file": _BINARY,
                        "metadata": {
                            "type": "string",
                            "description": 'JSON: {"architecture": {"kind": "mlp"|"cnn", "config": {}}, '
                                           '"name", "metrics", "data", "parent"}',
                        },
                    },
                    "required": ["file", "metadata"],
                }
            }
        },
    }
}
CANARY_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {"version": _MODEL, "fraction": {"type": "number", "exclusiveMinimum": 0,
                                                                   "exclusiveMaximum": 1}},
                    "required": ["version", "fraction"],
                }
            }
        },
    }
}
