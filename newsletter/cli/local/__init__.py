"""Local services for a machine with nothing but Python: a private Redis, a Celery worker
subprocess (services.py) and a mail catcher that stores .eml files (mailcatcher.py).

The CLI starts them when REDIS_URL does not answer or SMTP_HOST is empty; the demo,
the tests and the benches use them too.
"""
