"""Names that end up in libvirt (domain names, volume names) and queue names: validated once, here."""

from __future__ import annotations

import re

# An RFC 1123 DNS label in lower case: no path separators, no dots, no XML metacharacters, <= 63 chars.
DNS_LABEL_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
DNS_LABEL_RE = re.compile(DNS_LABEL_PATTERN)


def is_dns_label(value: str) -> bool:
    return bool(DNS_LABEL_RE.match(value))
