"""LitServe over the same bundle, for ``benchmarks/serve.py`` only (``pip install litserve==0.2.19``).

Requests are JSON ``{"b64": "<image>"}`` on ``/invocations``: LitServe parses every non-form body as
JSON, so the raw ``image/jpeg`` bodies of SageMaker's contract fail unless its private request
handling is patched (LitServe issue #732). That is why bincount does not serve with it; this app
measures what it would have given on its own terms. Each image is decoded in ``decode_request`` so a
bad one fails alone (LitServe handles errors per batch, issue #340).
"""

from __future__ import annotations

import base64
import sys


import litserve as ls  # noqa: E402
import torch  # noqa: E402


class BinCountAPI(ls.LitAPI):  # module level: LitServe pickles it into its worker process
    model_path = ""

    def setup(self, device):
        from bincount.bundle import load_model

        self.model = load_model(self.model_path)

    def decode_request(self, request):
        return self.model.preprocess(base64.b64decode(request["b64"]))

    def batch(self, inputs):
        return torch.stack(inputs)

    def predict(self, x):
        from bincount.serve.batcher import rows

        return rows(self.model.predict(x if x.ndim == 4 else x.unsqueeze(0)), self.model.counts)

    def unbatch(self, output):
        return output

    def encode_response(self, output):
        return output[0] if isinstance(output, list) else output


def main(model_path: str, port: int, max_batch_size: int, max_wait_ms: float) -> None:
    api = BinCountAPI(max_batch_size=max_batch_size, batch_timeout=max_wait_ms / 1000, api_path="/invocations")
    api.model_path = model_path
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1, timeout=60)
    server.run(host="127.0.0.1", port=port, log_level="warning", generate_client_file=False)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]))
