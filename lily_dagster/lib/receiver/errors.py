"""The receiver's error type: an HTTP status and the contract's error code (CONTRACT.md §4)."""

from __future__ import annotations


class RequestRejectedError(Exception):
    """A refused request: `status` and `code` become the response, `detail` its text."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        pointer: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.pointer = pointer
        self.headers = headers or {}

    def body(self) -> dict[str, str]:
        out = {"error": self.code, "detail": self.detail}
        if self.pointer is not None:
            out["pointer"] = self.pointer
        return out


def unauthenticated(detail: str) -> RequestRejectedError:
    return RequestRejectedError(
        401, "unauthenticated", detail, headers={"WWW-Authenticate": 'Bearer realm="lily"'}
    )


def forbidden(detail: str, code: str = "forbidden") -> RequestRejectedError:
    return RequestRejectedError(403, code, detail)
