"""The hypervisor side: Celery tasks that run VM sagas against the local libvirt."""
