"""The web app: sign-up, double opt-in, preference centre, unsubscribe, JSON API.

`newsletter.web.app:app` is what uvicorn serves (the Procfile's `web`);
`create_app()` builds a fresh app (tests build one per test).
"""
