"""Real SMTP peers on loopback: a private Postfix + Dovecot, and aiosmtpd."""
