"""The reference app's demo ``@internal`` job."""

from __future__ import annotations

import hashlib
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Checksum"]


class Checksum(BaseModel):
    """Digest of a text, computed by the server itself (``@internal:analysis:Checksum``).

    Submit ``{"text": "hello"}`` from any room; the result is ``{"algorithm": ...,
    "hexdigest": ..., "length": ...}``.
    """

    model_config = ConfigDict(extra="forbid")

    category: ClassVar[str] = "analysis"
    text: str = Field(description="The text to digest (UTF-8).", max_length=65_536)
    algorithm: Literal["sha256", "sha1", "md5", "blake2b"] = "sha256"

    def run(self, task: Any = None, **kwargs: Any) -> dict[str, Any]:
        """Digest :attr:`text`."""
        data = self.text.encode()
        digest = hashlib.new(self.algorithm, data, usedforsecurity=False)
        return {"algorithm": self.algorithm, "hexdigest": digest.hexdigest(), "length": len(data)}
