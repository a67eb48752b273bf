"""The Celery app of a worker (and of beat): built from common/ settings, listing the task modules."""

from common.config import get_settings
from common.queue import make_celery

app = make_celery(get_settings(), include=["worker.tasks", "worker.control", "worker.boot"])
