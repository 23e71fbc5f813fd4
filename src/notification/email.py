"""Email channel: aiosmtplib with STARTTLS (or implicit TLS) and login, one `Outbox`.

Each email is an `EmailMessage`: a plain-text part, an HTML alternative and, for reports,
the equity chart attached as PNG. Alerts that arrive together are merged into one email
(at most one every `min_interval` seconds).
"""

from __future__ import annotations

import html
import logging
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

from notification.config import EmailConfig
from notification.messages import Message
from notification.outbox import ChannelError, Outbox
from notification.redact import install_log_filter, register_secret, scrub

log = logging.getLogger(__name__)
MAX_EMAIL_CHARS = 100_000  # a merged email stops growing here; the next one starts


def _import_aiosmtplib() -> Any:
    try:
        import aiosmtplib
    except ImportError as exc:
        raise ImportError("email notifications need aiosmtplib: pip install 'atf[notify]'") from exc
    return aiosmtplib


def build_email(msg: Message, *, sender: str, to: list[str], bot: str = "") -> EmailMessage:
    """Return the email of one message: text, HTML alternative, PNG attachment if any."""
    first = msg.text.splitlines()[0] if msg.text else "notification"
    count = msg.text.count("\n") + 1
    subject = msg.subject or (f"[atf{' ' + bot if bot else ''}] {first}" if count == 1 or msg.html
                              else f"[atf{' ' + bot if bot else ''}] {count} notifications: {first}")
    em = EmailMessage()
    em["Subject"] = subject[:150]
    em["From"] = sender
    em["To"] = ", ".join(to)
    em["Date"] = formatdate(localtime=False)
    em["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    em.set_content(msg.text + "\n")
    body = msg.html or ("<html><body><pre style='font-family: sans-serif'>"
                        + html.escape(msg.text) + "</pre></body></html>")
    em.add_alternative(body, subtype="html")
    if msg.photo is not None:
        em.add_attachment(msg.photo, maintype="image", subtype="png", filename="equity.png")
    return em


class EmailChannel:
    """Send the configured categories by email."""

    name = "email"

    def __init__(self, config: EmailConfig, *, bot: str = "") -> None:
        self._smtp = _import_aiosmtplib()
        self.config = config
        self.bot = bot
        self.outbox: Outbox | None = None
        self._ssl: ssl.SSLContext | None = None
        if config.password is not None:
            register_secret(config.password.get_secret_value())

    def __repr__(self) -> str:
        c = self.config
        return f"EmailChannel({c.smtp_host}:{c.smtp_port}, to={c.to})"

    def accepts(self, category: str) -> bool:
        return category in self.config.categories

    async def start(self) -> None:
        install_log_filter()
        c = self.config
        if c.security != "none":
            self._tls_context()
        self.outbox = Outbox("email", self._send, min_interval=c.min_interval, timeout=c.timeout,
                             max_attempts=c.max_attempts, backoff=c.backoff, backoff_max=c.backoff_max,
                             queue_size=c.queue_size, max_chars=MAX_EMAIL_CHARS)
        self.outbox.start()

    def post(self, msg: Message) -> None:
        if self.outbox is not None and msg.chat_id is None:
            self.outbox.put(msg)

    async def wait_idle(self) -> None:
        if self.outbox is not None:
            await self.outbox.wait_idle()

    async def close(self, timeout: float = 5.0) -> None:
        if self.outbox is not None:
            await self.outbox.close()

    def _tls_context(self) -> ssl.SSLContext:
        # Built once: loading the system CA store costs a quarter second of CPU, under the GIL.
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
            if self.config.ca_file:
                self._ssl.load_verify_locations(cafile=self.config.ca_file)
        return self._ssl

    async def _send(self, msg: Message) -> None:
        c = self.config
        sender = c.sender or c.username or ""
        em = build_email(msg, sender=sender, to=c.to, bot=self.bot)
        tls = c.security != "none"
        try:
            await self._smtp.send(
                em, hostname=c.smtp_host, port=c.smtp_port, username=c.username,
                password=c.password.get_secret_value() if c.password is not None else None,
                use_tls=c.security == "tls", start_tls=c.security == "starttls",
                tls_context=self._tls_context() if tls else None, timeout=c.timeout,
            )
        except self._smtp.SMTPException as exc:
            raise ChannelError(scrub(f"{type(exc).__name__}: {exc}")) from None
        except OSError as exc:
            raise ChannelError(scrub(f"{type(exc).__name__}: {exc}")) from None
