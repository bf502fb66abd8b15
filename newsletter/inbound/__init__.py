"""Mail coming back: bounces, complaints, unsubscribes and auto-replies.

`policy` decides and records what each one means (every caller goes through it);
`parse` reads a message; `receiver` is the SMTP server behind the MX; `imap` polls a
mailbox for operators whose MX is elsewhere.
"""
