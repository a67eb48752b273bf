"""YAML written as JSON: JSON is a subset of YAML 1.2, and with the escapes below also of the YAML 1.1
that cloud-init's PyYAML reads. One key or list item a line keeps the tiny test guest's reader (awk)
simple, and nothing here depends on a YAML emitter's choices of style."""

from __future__ import annotations

import json
import re
from typing import Any

# Characters PyYAML refuses in a stream (C0 controls, DEL, C1 controls, U+FFFE/FFFF), takes for line
# breaks even inside quotes (NEL, LS, PS), or may drop (a byte order mark). json.dumps escapes only
# C0 controls, quotes and backslashes when it keeps other characters as they are (ensure_ascii=False).
_NOT_FOR_YAML = re.compile("[\x7f-\x9f\u2028\u2029\ufeff\ufffe\uffff]")


def yaml_text(document: Any) -> str:
    """`document` (dicts, lists, strings, numbers) as YAML text that PyYAML loads back to it."""
    text = json.dumps(document, indent=2, ensure_ascii=False)
    return _NOT_FOR_YAML.sub(lambda match: f"\\u{ord(match.group()):04x}", text) + "\n"
