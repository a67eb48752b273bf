"""`iaas`: the client CLI of mini-iaas. It talks to the REST API only (never to PostgreSQL, Redis or
libvirt), so it runs on any machine that reaches the API."""
