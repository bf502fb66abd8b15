"""Mail coming back: bounces, complaints and unsubscribes, by SMTP, IMAP and webhooks."""
