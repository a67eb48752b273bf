"""`user-data`: a MIME multipart/mixed message, as cloud-init reads it. The first part is the control
plane's cloud-config (the SSH keys); the user's own data follows unchanged, typed the way cloud-init
would type it had it been sent alone, so a script is still run and a cloud-config still merged.

Every part is base64-encoded: the user's bytes (CRLF, a missing final newline, any UTF-8) come out of
cloud-init's decoder exactly as they went in, and no line of a part can look like a boundary (`-` is
not a base64 character), which lets the boundary be fixed: the same spec gives the same bytes."""

from __future__ import annotations

from email import encoders
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart

from worker.seed.spec import SeedSpec
from worker.seed.yaml_text import yaml_text

BOUNDARY = "mini-iaas-seed"
KEYS_PART = "mini-iaas-keys.cfg"  # the parts' file names, which cloud-init uses for scripts
USER_PART = "user-data"
# Later cloud-config parts merge into earlier ones; with this a user's `ssh_authorized_keys` adds to
# the project's keys instead of replacing them (cloud-init's default replaces lists).
USER_CONFIG_MERGE = "list(append)+dict(recurse_array)+str()"

# cloud-init's table of what user data starts with (compared in lower case, after leading white
# space; the longest match wins) and the content type it then gives the data.
STARTS_WITH = {
    "#!": "text/x-shellscript",
    "#cloud-config": "text/cloud-config",
    "#cloud-config-archive": "text/cloud-config-archive",
    "#cloud-config-jsonp": "text/cloud-config-jsonp",
    "#cloud-boothook": "text/cloud-boothook",
    "#include": "text/x-include-url",
    "#include-once": "text/x-include-once-url",
    "#part-handler": "text/part-handler",
    "## template: jinja": "text/jinja2",
}
# Anything else: cloud-init looks a text/plain part up in the same table again and, finding nothing,
# leaves it alone -- just what it does with such data sent without a MIME wrapper.
UNKNOWN = "text/plain"


def content_type(data: str) -> str:
    start = data.lstrip().lower()
    matches = [prefix for prefix in STARTS_WITH if start.startswith(prefix)]
    return STARTS_WITH[max(matches, key=len)] if matches else UNKNOWN


def _part(mime_type: str, filename: str, payload: bytes) -> MIMEBase:
    maintype, subtype = mime_type.split("/")
    part = MIMEBase(maintype, subtype, charset="utf-8")
    part.set_payload(payload)
    encoders.encode_base64(part)
    part.add_header("Content-Disposition", "attachment", filename=filename)
    return part


def user_data(spec: SeedSpec) -> bytes:
    """The `user-data` file: empty when there are neither keys nor user data."""
    parts = []
    if spec.authorized_keys:
        config = "#cloud-config\n" + yaml_text({"ssh_authorized_keys": list(spec.authorized_keys)})
        parts.append(_part("text/cloud-config", KEYS_PART, config.encode()))
    if spec.user_data is not None:
        kind = content_type(spec.user_data)
        part = _part(kind, USER_PART, spec.user_data.encode())
        if kind == "text/cloud-config":
            part["Merge-Type"] = USER_CONFIG_MERGE
        parts.append(part)
    if not parts:
        return b""
    message = MIMEMultipart("mixed", boundary=BOUNDARY)
    for part in parts:
        message.attach(part)
    return message.as_bytes()
