"""The API over HTTP: one requests session with the token, the error envelope turned into ApiError,
cursor paging followed, and requests that carry an Idempotency-Key retried when the answer was lost."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import requests

from cli.config import Config

# Retries of a lost answer: after a refused connection, a reset or a 503 (PostgreSQL briefly away).
# Only idempotent requests are retried: reads, and writes that carry an Idempotency-Key.
RETRY_PAUSES = (0.3, 1.0)
TIMEOUT_S = 30.0


class ApiError(Exception):
    """An answer in the API's error envelope (or an answer that is not one, as code http_<status>)."""

    def __init__(self, status: int, code: str, message: str, details: Mapping[str, Any] | None = None):
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = dict(details or {})


class Unreachable(Exception):
    """No answer from the API at all; the message says what to do next."""


def new_idempotency_key() -> str:
    return str(uuid.uuid4())


class Client:
    def __init__(self, config: Config, session: requests.Session | None = None):
        self.config = config
        self.session = session or requests.Session()
        if config.token:
            self.session.headers["Authorization"] = f"Bearer {config.token}"
        self.session.headers["User-Agent"] = "mini-iaas-cli"

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        idempotency_key: str | None = None,
        timeout: float = TIMEOUT_S,
    ) -> requests.Response:
        """The answer to one call; an error answer raises ApiError, no answer Unreachable."""
        if not self.config.token:
            raise Unreachable(
                'no API token: set IAAS_TOKEN, pass --token, or put token = "..." in '
                f"{self.config.source} (mode 0600); make one with `iaas-admin token create` on the host"
            )
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        retry = method == "GET" or idempotency_key is not None
        url = self.config.url + path
        for pause in (*RETRY_PAUSES, None):
            try:
                response = self.session.request(
                    method, url, params=params, json=json, headers=headers, timeout=timeout
                )
            except requests.ConnectionError as exc:
                if retry and pause is not None:
                    time.sleep(pause)  # back off before asking again, not a synchronisation
                    continue
                raise Unreachable(
                    f"cannot reach the mini-iaas API at {self.config.url} ({_reason(exc)}). Is the stack "
                    "up (`make status` on its host)? Point the CLI at it with --url or IAAS_URL."
                ) from exc
            except requests.Timeout as exc:
                raise Unreachable(
                    f"the API at {self.config.url} did not answer within {timeout:.0f} s; try again "
                    "(a create, delete or power action sent with the same --idempotency-key is safe "
                    "to repeat)"
                ) from exc
            if response.status_code == 503 and retry and pause is not None:
                time.sleep(pause)
                continue
            if response.status_code >= 400:
                raise _api_error(response)
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=_present(params)).json()

    def pages(self, path: str, **params: Any) -> Iterator[dict[str, Any]]:
        """Every item of a list, all its pages followed (`next_cursor` passed back as `cursor`)."""
        query = _present(params)
        while True:
            page = self.request("GET", path, params=query).json()
            yield from page["items"]
            cursor = page.get("next_cursor") or page.get("next")
            if not cursor:
                return
            query = {**query, "cursor": cursor}


def _present(params: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in params.items() if value is not None}


def _reason(exc: requests.ConnectionError) -> str:
    text = str(exc)
    for known in ("Connection refused", "Name or service not known", "No route to host", "timed out"):
        if known in text:
            return known.lower()
    return "no connection"


def _api_error(response: requests.Response) -> ApiError:
    try:
        error = response.json()["error"]
        return ApiError(response.status_code, str(error["code"]), str(error["message"]), error.get("details"))
    except (ValueError, KeyError, TypeError):
        reason = response.reason or "error"
        return ApiError(
            response.status_code,
            f"http_{response.status_code}",
            f"{reason} (not an answer of mini-iaas's API)",
        )
