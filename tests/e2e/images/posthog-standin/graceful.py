"""How the stand-in's web server ends on SIGTERM: as gunicorn 20.1.0's gthread worker does (the version
PostHog 1.43.0 pins, requirements.txt at the tag), which the kit relies on to replace web behind the
edge proxy without failed requests.

gunicorn on SIGTERM (`docker stop`): the arbiter closes its copy of the listener and sends SIGTERM to
the workers (gunicorn/arbiter.py:255-257, 370-398); a gthread worker only sets alive = False
(gunicorn/workers/base.py:190-191), leaves its loop after the current select of at most 1 s (it may
still accept then), closes its listeners, and waits up to graceful_timeout for the requests in flight
(gunicorn/workers/gthread.py:193-229), whose responses say `Connection: close` (gthread.py:318-319).
PostHog leaves graceful_timeout at gunicorn's 30 s (gunicorn/config.py:792-799): its gunicorn.config.py
spells it `grateful_timeout` (gunicorn.config.py:24 at 1.43.0).

Keep-alive is not modelled (the stand-in answers HTTP/1.0, one request a connection; PostHog sets
keepalive = 120, gunicorn.config.py:16): the kit's proxy opens a connection for every request
(proxy/Caddyfile), so idle kept-alive connections never exist behind it.
"""
import signal
import threading
from http.server import ThreadingHTTPServer

#: gunicorn's default graceful_timeout, which PostHog 1.43 keeps.
GRACEFUL_TIMEOUT = 30.0
#: The longest a gthread worker keeps accepting after SIGTERM: its select's timeout (gthread.py:200).
SELECT_TIMEOUT = 1.0


class GracefulServer(ThreadingHTTPServer):
    """A threading HTTP server that counts the requests in flight, so that a stop can wait for them."""

    daemon_threads = True  # past the graceful timeout the process exits anyway (gunicorn SIGKILLs)
    #: gunicorn's listen backlog (gunicorn/config.py:613-620, sock.py:56; neither PostHog's bin/docker-server
    #: nor its gunicorn.config.py sets one), not socketserver's 5: with 5, a burst of connections to a web
    #: that is slow to accept (a new one on a loaded host) had SYNs dropped and requests reset.
    request_queue_size = 2048

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.in_flight = 0
        self._changed = threading.Condition()

    def process_request_thread(self, request, client_address):
        with self._changed:
            self.in_flight += 1
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._changed:
                self.in_flight -= 1
                self._changed.notify_all()

    def drain(self, timeout: float) -> bool:
        """Wait until no request is in flight (True) or ``timeout`` passed (False)."""
        with self._changed:
            return self._changed.wait_for(lambda: self.in_flight == 0, timeout)


def serve(server: GracefulServer, graceful_timeout: float = GRACEFUL_TIMEOUT) -> None:
    """Serve until SIGTERM, then stop as a gthread worker does: the accept loop runs on until its select
    of at most SELECT_TIMEOUT returns (accepting what is ready then), the listener closes (new
    connections are refused from then on), the requests in flight finish within ``graceful_timeout``."""
    import selectors

    alive = [True]
    signal.signal(signal.SIGTERM, lambda signum, frame: alive.__setitem__(0, False))  # base.py:190-191
    poller = selectors.DefaultSelector()
    poller.register(server.socket, selectors.EVENT_READ)
    while alive[0]:  # gthread.py:193-201: the listener's callback runs before alive is looked at again
        for _ in poller.select(SELECT_TIMEOUT):
            server._handle_request_noblock()
    poller.close()
    server.socket.close()  # gthread.py:223-227
    server.drain(graceful_timeout)  # gthread.py:229
