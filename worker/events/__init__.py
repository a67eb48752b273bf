"""`iaas-events`: libvirt's lifecycle events turned into each VM's live power state."""
