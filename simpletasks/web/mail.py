"""E-mail through SMTP (result links for upload pages)."""

from __future__ import annotations

import logging
import smtplib
from email.message import EmailMessage

from simpletasks.web.config import SmtpConfig

logger = logging.getLogger(__name__)


class Mailer:
    """Sends plain-text e-mails with the configured SMTP server."""

    def __init__(self, config: SmtpConfig) -> None:
        self.config = config

    @property
    def enabled(self) -> bool:
        """Whether an SMTP host is configured."""
        return bool(self.config.host)

    def send(self, to: str, subject: str, text: str) -> None:
        """Send one e-mail.

        Raises:
            OSError, smtplib.SMTPException: If the server cannot be reached or refuses.
        """
        c = self.config
        message = EmailMessage()
        message["From"] = c.sender
        message["To"] = to
        message["Subject"] = subject
        message.set_content(text)
        with smtplib.SMTP(c.host, c.port, timeout=c.timeout) as smtp:
            if c.starttls:
                smtp.starttls()
            if c.username:
                smtp.login(c.username, c.password)
            smtp.send_message(message)
        logger.info("mailed %s: %s", to, subject)
