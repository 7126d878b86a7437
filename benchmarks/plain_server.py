"""The reference that benchmarks/serve.py measures Lettucify's server against: the FastAPI app
a user writes by hand around a registered model, eager PyTorch on raw JPEG bytes.

    python benchmarks/plain_server.py MODEL_URI PORT [TRACKING_URI]

One route, ``POST /predict`` with the image bytes as the body; it decodes, preprocesses
and runs the model in the request handler, one image at a time, as such apps do.
"""

from __future__ import annotations

import io
import sys

import torch
import uvicorn
from fastapi import FastAPI, Request
from PIL import Image

from lettucify.data.transforms import eval_transform
from lettucify.tracking import load_registered


def make_app(model_uri: str, tracking_uri: str | None) -> FastAPI:
    model, classes, preprocess = load_registered(model_uri, tracking_uri=tracking_uri)
    transform = eval_transform(preprocess["input_size"], preprocess["mean"], preprocess["std"])
    app = FastAPI()

    @app.get("/ready")
    def ready() -> dict:
        return {"ready": True}

    @app.post("/predict")
    async def predict(request: Request) -> dict:
        image = Image.open(io.BytesIO(await request.body())).convert("RGB")
        with torch.no_grad():
            probabilities = model(transform(image).unsqueeze(0)).softmax(1)[0]
        score, index = probabilities.max(0)
        return {"label": classes[int(index)], "score": float(score)}

    return app


if __name__ == "__main__":
    uvicorn.run(make_app(sys.argv[1], sys.argv[3] if len(sys.argv) > 3 else None),
                host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
