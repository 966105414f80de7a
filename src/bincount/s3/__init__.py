"""S3 access for bincount: endpoints and clients (:mod:`.endpoint`), safe keys (:mod:`.keys`), a small
storage interface over local dirs and S3 (:mod:`.store`), and the ``bincount fetch`` command (:mod:`.fetch`).

Nothing here imports boto3 at module import time, so local runs never pay for it.
"""

from bincount.s3.endpoint import S3Config, S3Error, get_client, is_s3_url, parse_s3_url

__all__ = ["S3Config", "S3Error", "get_client", "is_s3_url", "parse_s3_url"]
