"""Serve a bundle from NVIDIA Triton Inference Server (docs/triton.md).

    from vlfront.runtime.triton import RepositoryOptions, write_repository
    write_repository("build/default", "build/triton-repo", RepositoryOptions(instances=2, cache="redis://..."))

`TritonServer` / `RedisServer` start real servers on loopback (tests, benchmarks).
"""

from vlfront.runtime.triton.repository import (RepositoryOptions, TritonRepositoryError, validate_repository,
                                               write_repository)
from vlfront.runtime.triton.request import encode_request, encode_request_images, parse_request
from vlfront.runtime.triton.services import RedisServer, ServiceError, TritonServer

__all__ = ["RepositoryOptions", "TritonRepositoryError", "write_repository", "validate_repository",
           "encode_request", "encode_request_images", "parse_request", "TritonServer", "RedisServer", "ServiceError"]
