"""Flower's options file (`celery -A common.celery_app flower --conf=worker/flower_config.py`, as
scripts/stack.sh starts it). Flower executes it: basic auth from IAAS_SECRETS_DIR/flower (one line,
`user:password`), so the credentials appear neither on Flower's command line nor in its environment.
Without that file Flower refuses to start rather than run open."""

from common.config import get_settings
from common.secrets import read_secret

_credentials = read_secret(get_settings().secrets_dir, "flower")
if not _credentials or ":" not in _credentials:
    raise SystemExit(
        f"no Flower credentials (`user:password`) in {get_settings().secrets_dir}/flower: "
        "scripts/ensure-secrets.sh makes them ('make up' runs it)"
    )
basic_auth = [_credentials]
