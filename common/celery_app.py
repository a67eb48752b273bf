"""The Celery app of beat and Flower: the settings of common/queue.py and no task modules.

Beat imports its app's task modules when it starts (`app.loader.init_worker()`), and the worker's
(worker/celery_app.py) pull in libvirt. Beat sends its schedule by task name and Flower only watches
the broker, so neither needs them, and both run where libvirt-python is not installed (the `api`
image of the Dockerfile, an API-only `pip install .`)."""

from common.config import get_settings
from common.queue import make_celery

app = make_celery(get_settings())
