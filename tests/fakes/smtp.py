"""SMTP servers on 127.0.0.1 for the email channel: a real aiosmtpd server with STARTTLS and
login (self-signed certificate from trustme), and one that accepts connections and never answers."""

from __future__ import annotations

import socket
import ssl
import threading
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    login: str | None
    tls: bool


@dataclass
class _Recorder:
    received: list[Received] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = message_from_bytes(envelope.original_content, policy=policy.default)
        login = session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None
        with self.cond:
            self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), msg,  # type: ignore[arg-type]
                                          login, session.ssl is not None))
            self.cond.notify_all()
        return "250 Message accepted for delivery"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class FakeSMTPServer:
    """aiosmtpd requiring STARTTLS before AUTH LOGIN/PLAIN with one user and password."""

    def __init__(self, user: str, password: str, tmp: Path) -> None:
        self.user, self.password = user, password
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost")
        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(server_ctx)
        self.ca_file = tmp / "smtp-ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_file))
        self.recorder = _Recorder()
        self.logins: list[tuple[str, bool]] = []  # (user, accepted)
        self.port = free_port()
        self.controller = Controller(
            self.recorder, hostname="127.0.0.1", port=self.port, tls_context=server_ctx,
            require_starttls=True, authenticator=self._auth, auth_required=True, auth_require_tls=True,
        )

    def _auth(self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        ok = (isinstance(auth_data, LoginPassword) and auth_data.login.decode() == self.user
              and auth_data.password.decode() == self.password)
        self.logins.append((auth_data.login.decode() if isinstance(auth_data, LoginPassword) else "?", ok))
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

    def start(self) -> FakeSMTPServer:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    @property
    def received(self) -> list[Received]:
        with self.recorder.cond:
            return list(self.recorder.received)

    def wait_received(self, count: int, timeout: float = 10.0) -> list[Received]:
        with self.recorder.cond:
            if not self.recorder.cond.wait_for(lambda: len(self.recorder.received) >= count, timeout):
                raise AssertionError(f"{len(self.recorder.received)} email(s) received, expected {count}")
            return list(self.recorder.received)


class SilentServer:
    """Accept TCP connections and never send a byte (a hanging SMTP or HTTP server)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = int(self.sock.getsockname()[1])
        self.accepted = 0
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True, name="silent-server")

    def start(self) -> SilentServer:
        self._thread.start()
        return self

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            self._conns.append(conn)

    def stop(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        for c in self._conns:
            c.close()
        self._thread.join(5)
