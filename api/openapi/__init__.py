"""The OpenAPI 3.1 document of the API, generated from the pydantic models: the request schemas
(api/schemas.py and the views), the response models (responses.py) and the table of routes (routes.py),
assembled by document.py and served, with a page to browse it, by api/views/docs.py."""
