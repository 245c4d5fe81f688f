"""Who may query: HTTP Basic with a service account (plus project_id), or the legacy project
secret as the username with an empty password. Answers with the API's 401/403/400 bodies."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping

from .config import EmulatorConfig
from .request import INT
from .transport import Response, json_response

__all__ = ["authenticate"]


def authenticate(
    cfg: EmulatorConfig, header: str | None, params: Mapping[str, str]
) -> Response | None:
    """None when the request may proceed, else the refusal to send."""

    def deny(status: int, message: str) -> Response:
        extra = [("WWW-Authenticate", 'Basic realm="Mixpanel"')] if status == 401 else []
        return json_response(status, {"error": message, "status": "error"}, extra)

    if not header or not header.lower().startswith("basic "):
        return deny(
            401,
            "Unauthorized: missing credentials; use HTTP Basic auth with a "
            "service account username and secret",
        )
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return deny(401, "Unauthorized: malformed Basic credentials")
    user, _, password = decoded.partition(":")
    legacy = cfg.legacy_secret is not None and user == cfg.legacy_secret and password == ""
    if not legacy and not (user == cfg.username and password == cfg.secret):
        return deny(401, "Unauthorized: invalid service account username or secret")
    raw_project = (params.get("project_id") or "").strip()
    if not raw_project:
        if legacy:
            return None
        return json_response(
            400,
            {
                "error": "project_id is required when authenticating with a service account",
                "status": "error",
            },
        )
    if not INT.fullmatch(raw_project) or len(raw_project) > 19:
        return json_response(400, {"error": "project_id must be an integer", "status": "error"})
    if int(raw_project) != cfg.project_id:
        return deny(
            403,
            f"Permission denied: this service account has no access to project {int(raw_project)}",
        )
    return None
