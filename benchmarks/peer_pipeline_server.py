"""The peer in the serving benchmark: what a user would otherwise write — transformers'
``pipeline("text-classification")`` on a merged model folder inside a FastAPI handler.

    python benchmarks/peer_pipeline_server.py MODEL_FOLDER --port 8001

It answers ``POST /v1/predict {"texts": [...]}`` like ``weibo-senti serve`` (label and score per
text) so one load generator drives both. The handler is a plain ``def``, as the FastAPI and
transformers docs show it: FastAPI runs it in its thread pool, so concurrent requests call the
pipeline from several threads at once (no batching across requests).
"""

from __future__ import annotations

import argparse

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel
from transformers import pipeline


class Body(BaseModel):
    texts: list[str]


def create_app(model: str) -> FastAPI:
    classify = pipeline("text-classification", model=model, truncation=True)
    app = FastAPI()

    @app.get("/health")
    def health():
        return {"status": "ok"}

    @app.post("/v1/predict")
    def predict(body: Body):
        return {"predictions": classify(body.texts)}

    return app


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("model")
    ap.add_argument("--port", type=int, default=8001)
    args = ap.parse_args()
    uvicorn.run(create_app(args.model), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
