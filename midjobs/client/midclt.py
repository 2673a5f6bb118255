"""
C{midclt}: call the midjobs daemon from the command line.

    midclt [-u URI] [-U USER] [-P PASSWORD] [-K API_KEY] [-t SECONDS]
           [--insecure | --ssl-ca FILE] {call,ping,subscribe} ...

Exit status: 0 on success, 1 on any failure (printed on stderr, unless
C{call -q} and the call itself failed), 130 on Ctrl-C.

As the original C{midclt}: C{-q} silences the errors of the call, never its
result, and a C{None} result prints C{null}.
"""

from __future__ import annotations

import argparse
import errno
import getpass
import json
import os
import sys
from typing import TYPE_CHECKING, Any, Awaitable, Callable, NoReturn, Sequence

from twisted.internet import error as net_error
from twisted.internet.defer import Deferred, TimeoutError as DeferredTimeoutError
from twisted.internet.interfaces import IReactorCore, IReactorTime
from twisted.internet.task import react

from midjobs import wire_json
from midjobs.paths import default_socket_path

from ._client import Client, connect
from ._endpoint import ClientTLSError
from ._errors import ClientCallError, ClientConnectFailed, ClientConnectionLost, JobAborted, JSONRPCError
from ._progress import ProgressDisplay

if TYPE_CHECKING:

    class _IReactor(IReactorCore, IReactorTime):
        """
        What midclt needs of the reactor C{react} gives it (for the type
        checker only, as Twisted's own C{_IReactorCommon}).
        """

__all__ = ["main", "default_uri", "format_result"]

_NOT_RUNNING = "Failed to run middleware call. Daemon not running?"


class _Failed(Exception):
    """
    A failure already worded for the user.
    """


def default_uri() -> str:
    """
    The daemon's default UNIX socket as a URI.
    """
    return f"ws+unix://{default_socket_path()}"


def format_result(value: Any) -> str:
    """
    How C{call} prints a result, as the original C{midclt}: bools as
    C{True}/C{False}, strings and ints as they are, the rest (L{None}
    included: C{null}) as one line of JSON.
    """
    if isinstance(value, bool):
        return repr(value)
    if isinstance(value, (str, int)):
        return str(value)
    return json.dumps(value, default=wire_json.to_wire)


def _parse_arg(text: str) -> Any:
    if text == "-":
        data = sys.stdin.read()
        try:
            return wire_json.loads(data)
        except ValueError as e:
            raise _Failed(f"Standard input is not one JSON value: {e}") from None
    try:
        return wire_json.loads(text)
    except ValueError:
        return text


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="midclt", description="Call the midjobs daemon.")
    parser.add_argument("-u", "--uri", default=None, metavar="URI",
                        help=f"ws://, wss:// or ws+unix:// (default: {default_uri()})")
    parser.add_argument("-U", "--username", metavar="USER", help="log in as USER with a password")
    parser.add_argument("-P", "--password", metavar="PASSWORD", help="the password (asked for when missing)")
    parser.add_argument("-K", "--api-key", metavar="API_KEY", help="log in with an API key")
    parser.add_argument("-t", "--timeout", type=float, metavar="SECONDS",
                        help="timeout for connecting and for each call")
    tls = parser.add_mutually_exclusive_group()
    tls.add_argument("--insecure", action="store_true", help="do not verify the wss:// server certificate")
    tls.add_argument("--ssl-ca", metavar="FILE",
                     help="verify the wss:// server certificate against the CA certificates of this PEM file "
                          "instead of the system's")
    commands = parser.add_subparsers(dest="command", metavar="{call,ping,subscribe}", required=True)

    call = commands.add_parser("call", help="call a method and print its result")
    call.add_argument("-q", "--quiet", action="store_true",
                      help="do not print the error when the call fails (the exit status still says so)")
    call.add_argument("-j", "--job", action="store_true", help="wait for the job and show its progress")
    call.add_argument("--job-print", choices=("progressbar", "description"), default="progressbar",
                      help="with --job: draw a progress bar (default) or print each new description")
    call.add_argument("method", metavar="METHOD")
    call.add_argument("args", nargs="*", metavar="ARG",
                      help="parsed as JSON when it can be, else a string; '-' reads JSON from stdin")

    commands.add_parser("ping", help="check that the daemon answers")

    subscribe = commands.add_parser("subscribe", help="print events as JSON lines")
    subscribe.add_argument("-n", "--number", type=int, metavar="N", help="stop after N events")
    subscribe.add_argument("-t", "--timeout", dest="duration", type=float, metavar="SECONDS",
                           help="stop after SECONDS")
    subscribe.add_argument("event", metavar="EVENT")
    return parser


def _err(*lines: str) -> None:
    for line in lines:
        if line:
            sys.stderr.write(line if line.endswith("\n") else line + "\n")
    sys.stderr.flush()


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _is_not_running(e: BaseException) -> bool:
    if isinstance(e, (net_error.ConnectionRefusedError, FileNotFoundError, ConnectionRefusedError)):
        return True
    if isinstance(e, net_error.ConnectError):
        code = getattr(e, "osError", None)
        return code in (errno.ENOENT, errno.ECONNREFUSED) or "No such file" in str(e)
    return False


class _Run:
    """
    One run of midclt inside the reactor.
    """

    def __init__(self, opts: argparse.Namespace) -> None:
        self.opts = opts
        self.finished = False
        self.stopping = False
        self.interrupted = False
        self.display: ProgressDisplay | None = None
        #: The call has been made: a failure now is the call's (C{-q} silences it).
        self.calling = False

    async def __call__(self, reactor: _IReactor) -> None:
        reactor.addSystemEventTrigger("before", "shutdown", self._shutdown)
        try:
            code = await self._main(reactor)
        finally:
            self.finished = True
        raise SystemExit(code)

    def _shutdown(self) -> None:
        self.stopping = True
        if not self.finished:
            self.interrupted = True
            if self.display is not None:
                self.display.end_line()

    async def _main(self, reactor: _IReactor) -> int:
        opts = self.opts
        uri = opts.uri or default_uri()
        try:
            client = await connect(uri, reactor=reactor, timeout=opts.timeout or 10,
                                   insecure=opts.insecure, ca_file=opts.ssl_ca, call_timeout=opts.timeout)
        except Exception as e:
            if not self.stopping:
                _err(self._connect_failure(uri, e))
            return 1
        try:
            await self._login(client)
            command: Callable[[Client, _IReactor], Awaitable[int]] = getattr(self, "_cmd_" + opts.command)
            return await command(client, reactor)
        except Exception as e:
            if self.display is not None:
                self.display.finish(success=False)
            if not self.stopping and not (self.calling and self.opts.quiet):
                self._report(e)
            return 1
        finally:
            if client.connected:
                await client.close().addTimeout(2, reactor).addErrback(lambda _: None)

    @staticmethod
    def _connect_failure(uri: str, e: BaseException) -> str:
        if _is_not_running(e):
            return _NOT_RUNNING
        if isinstance(e, (net_error.TimeoutError, DeferredTimeoutError)):
            return f"Failed to connect to {uri}: timed out"
        if isinstance(e, ClientTLSError):
            return (f"Failed to connect to {uri}: {e} (give --ssl-ca FILE to trust the CA that signed "
                    "the daemon's certificate, or --insecure to skip the check)")
        if isinstance(e, ClientConnectFailed):
            return f"Failed to connect to {uri}: {e}"
        return f"Failed to connect to {uri}: {e or type(e).__name__}"

    async def _login(self, client: Client) -> None:
        opts = self.opts
        try:
            if opts.api_key is not None:
                if not await client.login_with_api_key(opts.api_key):
                    raise _Failed("Failed to log in: the API key was refused")
            elif opts.username is not None:
                answer = await client.login_ex({"mechanism": "PASSWORD_PLAIN", "username": opts.username,
                                                "password": opts.password})
                kind = answer.get("response_type") if isinstance(answer, dict) else answer
                if kind != "SUCCESS":
                    raise _Failed(f"Failed to log in: {kind}")
        except (ClientCallError, JSONRPCError) as e:
            raise _Failed(f"Failed to log in: {e}") from None

    def _report(self, e: BaseException) -> None:
        if isinstance(e, _Failed):
            _err(str(e))
        elif isinstance(e, JobAborted):
            _err("Job was aborted")
        elif isinstance(e, ClientCallError):
            formatted = (e.trace or {}).get("formatted")
            _err(formatted or "", str(e))
        elif isinstance(e, JSONRPCError):
            _err(str(e))
        elif isinstance(e, ClientConnectionLost):
            _err(f"Connection to the daemon lost: {e}")
        elif isinstance(e, (DeferredTimeoutError, net_error.TimeoutError)):
            _err("Timed out waiting for the daemon")
        else:
            _err(f"{type(e).__name__}: {e}")

    async def _cmd_call(self, client: Client, reactor: _IReactor) -> int:
        opts = self.opts
        self.calling = True
        if opts.job:
            self.display = ProgressDisplay(sys.stderr, mode=opts.job_print)
            result = await client.call_job(opts.method, *opts.params, callback=self.display)
            self.display.finish(success=True)
            self.display = None
        else:
            result = await client.call(opts.method, *opts.params)
        _out(format_result(result))
        return 0

    async def _cmd_ping(self, client: Client, reactor: _IReactor) -> int:
        _out(str(await client.call("core.ping")))
        return 0

    async def _cmd_subscribe(self, client: Client, reactor: _IReactor) -> int:
        opts = self.opts
        done: Deferred[None] = Deferred()
        seen = 0

        def stop(error: object = None) -> None:
            if done.called:
                return
            if isinstance(error, Exception):
                done.errback(error)
            else:
                done.callback(None)

        def on_event(msg: str, collection: str, id: Any, fields: dict[str, Any]) -> None:
            nonlocal seen
            if done.called:
                return
            line = {"msg": msg, "collection": collection, "id": id, "fields": fields}
            try:
                _out(json.dumps(line, default=wire_json.to_wire))
            except BrokenPipeError:
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                stop()
                return
            seen += 1
            if opts.number is not None and seen >= opts.number:
                stop()

        if opts.number is not None and opts.number <= 0:
            return 0
        sub_id = await client.subscribe(opts.event, on_event)
        client.subscription_ended(sub_id).addCallbacks(stop, lambda f: stop(f.value))
        timer = reactor.callLater(opts.duration, stop) if opts.duration is not None else None
        try:
            await done
        finally:
            if timer is not None and timer.active():
                timer.cancel()
        return 0


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """
    Run midclt with C{argv} (default: C{sys.argv[1:]}) and exit.
    """
    opts = _parser().parse_args(argv)
    try:
        if opts.api_key is not None and opts.username is not None:
            raise _Failed("Use either -U/-P or -K, not both")
        if opts.username is not None and opts.password is None:
            opts.password = getpass.getpass(f"Password for {opts.username}: ")
        opts.params = [_parse_arg(a) for a in opts.args] if opts.command == "call" else []
    except _Failed as e:
        _err(str(e))
        sys.exit(1)
    except (KeyboardInterrupt, EOFError):
        sys.exit(130)
    run = _Run(opts)
    try:
        react(run)
    except SystemExit:
        if run.interrupted:
            sys.exit(130)
        raise
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(0)


if __name__ == "__main__":
    main()
