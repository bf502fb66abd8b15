"""Before anything starts: the secret key, and settings fit for production.

`secret` holds the key rules and the local key file, `checks` the production
report (`newsletter check`), `dns` the records to publish (`newsletter dns`) and
`startup` what each process runs first (exit 78 when the configuration is wrong).
Not to be confused with `newsletter.checks`, the editorial checks on an issue.
"""
