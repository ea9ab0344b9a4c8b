"""The admin API's routers, one per resource family; ``admin/app.py`` includes them."""
