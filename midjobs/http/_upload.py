"""
One C{POST /_upload}: a multipart body streamed straight into a job's input pipes.

L{Upload} is driven by the L{UploadRequest<midjobs.http._request.UploadRequest>}
that twisted.web makes for the request: L{Upload.headers_received} once the
headers are in, L{Upload.data_received} for each piece of the (de-chunked)
body, L{Upload.body_received} at its end, L{Upload.connection_lost}.

Once the headers are in, the caller logs in (the socket paused meanwhile);
C{Expect: 100-continue} is answered only after a good login, so a client
that waits for it never sends a refused body.  The body then goes through a
C{multipart.PushMultipartParser}: C{data} (JSON C{{"method", "params"}})
first, then one to five C{file} parts (C{docs/protocol.rst}, "POST /_upload").  The job starts when the
first file's headers arrive, with that file as its input pipe; every later
file is added to C{job.pipes.inputs}.  The connection is the producer of the
pipe being written, so a full pipe pauses the socket: memory stays bounded
whatever the size of the files, and the upload goes as fast as the job reads.
The answer, C{{"job_id": N}}, comes once the body ended and the last pipe was
closed.

The bytes of the file parts handed to the pipes count in the job's transfer
figures (C{progress.extra}'s C{bytes}, C{rate}; L{midjobs.transfer_progress}),
against a total taken from C{Content-Length} less the data part (a few
hundred bytes too many: part headers and boundaries), made exact once the
body has ended.

A refused upload (see L{STATUS}) is answered at once with C{{"error":
reason}}; if the body had not ended, with C{Connection: close}, and what the
client still sends is dropped for a short while so that it can read the
answer, then the connection is closed.  An upload that breaks after the job
started (a bad body, a client gone, a sixth file) fails the job's inputs with
L{UploadInterrupted}: the job's next read raises, it never sees a short file.
"""

from __future__ import annotations

import errno
import json
from collections import deque
from typing import TYPE_CHECKING, Any, Iterator

from multipart import MultipartError, MultipartSegment, PushMultipartParser, parse_options_header
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.protocols.policies import ProtocolWrapper
from twisted.python.failure import Failure
from zope.interface import implementer

from .. import wire_json
from ..errors import CallError
from ..job import Job, JobState
from ..logs import logger
from ..access import AccessDenied
from ..metrics import NO_COUNTS, ICounts
from ..middleware import Method, MethodNotFound, Middleware, NotAuthenticated
from ..pipe import InputPipes, Pipe, PipeBrokenError, Pipes
from ..transfer_progress import TransferProgress, transfer_progress
from ._auth import AuthenticationFailed, authenticate
from ._session import HttpSession

if TYPE_CHECKING:
    from ._request import UploadRequest

__all__ = ["MAX_FILES", "STATUS", "Upload", "UploadInterrupted"]

log = logger(__name__)

#: The most C{file} parts one upload may carry.
MAX_FILES = 5
#: The largest C{data} part (it is held in memory to be parsed).
MAX_DATA_SIZE = 1024 * 1024
#: Bytes read from the socket at a time while an upload's body streams
#: (Twisted reads 64 KiB otherwise).
UPLOAD_READ_SIZE = 1024 * 1024
#: How much body may come before the first part starts (a multipart
#: preamble); past it, the body is taken for something else than multipart.
MAX_PREAMBLE = 64 * 1024
#: After a refusal, how long and how much of the rest of the body is read
#: and dropped before the connection is closed: closing a socket with unread
#: data resets it, and the client may then lose the answer.
LINGER_SECONDS = 2.0
LINGER_BYTES = 1024 * 1024

#: The status codes of a refused upload (C{docs/protocol.rst}, "POST /_upload"), for reference.
STATUS = {
    400: "data is not valid JSON (or nested too deeply); or the multipart body is malformed or ends too early",
    401: "no credentials, or bad ones",
    403: "authenticated, but not allowed to call the method",
    405: "no part; a part out of place; more than five files",
    412: "the method refused the call, or its job failed while the upload streamed",
    413: "the data part is larger than MAX_DATA_SIZE",
    422: "data has no method, or the method does not exist",
}


class UploadInterrupted(CallError, PipeBrokenError):
    """
    The upload ended before the file did: the client went away, the body was
    malformed or cut short, or the upload was refused after the job started.
    What a job's read raises then.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason, errno.ECONNABORTED)


class _Refused(Exception):
    """
    End the upload with an HTTP error: C{status} and a C{reason} for the client.
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(status, reason)
        self.status = status
        self.reason = reason


def _stopped(job: Job) -> bool:
    """
    Whether C{job} failed or was aborted, even if its end is still being
    recorded (then its C{state} is still C{RUNNING}, but its error is known).
    """
    if job.state in (JobState.FAILED, JobState.ABORTED) or job.was_aborted:
        return True
    return bool(getattr(job, "ending", False)) and job.error is not None


def _socket_transport(transport: Any) -> Any:
    """
    The transport that reads the socket, under the protocol wrappers that
    may sit between it and the HTTP channel (the connection limits').
    """
    while isinstance(transport, ProtocolWrapper):
        transport = transport.transport
    return transport


@implementer(IPushProducer)
class _PipeProducer:
    """
    The HTTP connection, as the producer of one input pipe: the pipe pauses
    and resumes it, and tells it when the pipe broke.
    """

    def __init__(self, upload: Upload, pipe: Pipe) -> None:
        self.upload = upload
        self.pipe = pipe
        self.paused = False

    def pauseProducing(self) -> None:
        self.paused = True
        self.upload._pause(self)

    def resumeProducing(self) -> None:
        self.paused = False
        self.upload._resume(self)

    def stopProducing(self) -> None:
        self.upload._pipe_broke(self.pipe)


class Upload:
    """
    One upload, from its headers to its answer.

    Body chunks queue in C{_chunks} only while the caller logs in; the
    socket is paused then, so the queue holds at most what one read brought.
    L{_run} feeds them to the parser and handles its events one at a time,
    so that it can stop anywhere and go on later.  The job's start does not
    hold the body back (the pipe does, once full); only the answer waits for
    the job's id.
    """

    def __init__(self, request: UploadRequest, middleware: Middleware) -> None:
        self._request = request
        self._middleware = middleware
        self._reactor = middleware.reactor
        #: Where uploaded bytes and the data part's limit count.
        self._counts: ICounts = getattr(middleware, "metrics", NO_COUNTS)
        self._channel = request.channel
        self._transport = request.channel.transport
        self._connected = True
        # Large reads while the body streams: each read costs a trip through
        # the parser and the pipe, whatever its size.
        self._socket = _socket_transport(self._transport)
        self._read_size = getattr(self._socket, "bufferSize", None)
        if self._read_size is not None:
            self._socket.bufferSize = UPLOAD_READ_SIZE

        self._pauses: set[object] = set()
        self._transport_paused = False
        self._saved_timeout: Any = None

        self._chunks: deque[bytes] = deque()
        self._events: Iterator[Any] | None = None
        self._running = False
        self._busy = False
        self._body_done = False
        self._answered = False
        self._received = 0
        self._expects_continue = False
        self._continue_sent = False
        self._linger_call: Any = None
        self._lingered = 0

        self._parser: PushMultipartParser | None = None
        self._bad_body: _Refused | None = None
        self._segments = 0
        self._preamble = 0
        self._part: str | None = None
        self._data: list[bytes] = []
        self._data_size = 0

        self._session: HttpSession | None = None
        self._method: Method | None = None
        self._params: list[Any] = []
        self._inputs: InputPipes | None = None
        self._inputs_done = False
        self._pipe: Pipe | None = None
        self._producer: _PipeProducer | None = None
        self._files = 0
        self._starting = False
        self._job: Job | None = None
        #: The bytes of file parts handed to the job's pipes so far.
        self._file_bytes = 0
        #: The job's transfer figures, once the job is known.
        self._transfer: TransferProgress | None = None

    # -- from the request ---------------------------------------------------

    def headers_received(self) -> None:
        request = self._request
        headers = request.requestHeaders
        expect = headers.getRawHeaders(b"Expect")
        if expect and request.clientproto == b"HTTP/1.1" and expect[0].lower() == b"100-continue":
            self._expects_continue = True
        # twisted.web would answer 100 Continue as soon as gotLength returns:
        # we do it ourselves once the login is good.
        headers.removeHeader(b"Expect")
        self._parser = self._make_parser()
        self._busy = True
        self._pause("login")
        d = Deferred.fromCoroutine(authenticate(self._middleware.logins, request))
        d.addCallbacks(self._logged_in, self._login_failed).addErrback(self._crashed)

    def data_received(self, data: bytes) -> None:
        self._received += len(data)
        if self._answered:
            self._linger_on(len(data))
            return
        self._chunks.append(data)
        self._run()

    def body_received(self) -> None:
        self._body_done = True
        self._restore_read_size()
        if self._answered:
            self._end_linger()
            return
        self._run()

    def _restore_read_size(self) -> None:
        if self._read_size is not None:
            self._socket.bufferSize = self._read_size

    def connection_lost(self, reason: Failure) -> None:
        self._connected = False
        self._transport_paused = False
        if self._linger_call is not None and self._linger_call.active():
            self._linger_call.cancel()
        self._linger_call = None
        if not self._answered:
            self._answered = True
            self._fail_inputs(self._interrupted_reason())
            log.info(
                "Upload from {peer} interrupted: the client disconnected",
                peer=self._peer(),
            )
        self._drop_producer()
        self._chunks.clear()
        self._events = None

    # -- logging in ----------------------------------------------------------

    def _logged_in(self, user: Any) -> None:
        if self._answered:
            return
        self._session = HttpSession(self._request.getClientAddress(), user)
        if self._bad_body is not None:
            self._refuse(self._bad_body.status, self._bad_body.reason)
            return
        if self._expects_continue and not self._received and not self._body_done and self._connected:
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self._continue_sent = True
        self._busy = False
        self._resume("login")
        self._run()

    def _login_failed(self, failure: Failure) -> None:
        if failure.check(AuthenticationFailed):
            self._refuse(401, str(failure.value))
        else:
            log.failure("Login for an upload failed", failure)
            self._refuse(500, "Internal error while logging in")

    # -- the body -------------------------------------------------------------

    def _make_parser(self) -> PushMultipartParser | None:
        content_type = self._request.requestHeaders.getRawHeaders(b"Content-Type")
        media, options = parse_options_header(content_type[0].decode("latin-1")) if content_type else ("", {})
        if media != "multipart/form-data" or not options.get("boundary"):
            self._bad_body = _Refused(405, "No part found: the body must be multipart/form-data with a boundary")
            return None
        try:
            return PushMultipartParser(options["boundary"], max_segment_count=MAX_FILES + 2)
        except MultipartError as e:
            self._bad_body = _Refused(405, f"No part found: bad multipart boundary ({e})")
            return None

    def _run(self) -> None:
        """
        Parse what has arrived and act on it, until the upload is busy,
        answered, or has used all the body there is.
        """
        if self._running:
            return
        self._running = True
        try:
            while not self._answered and not self._busy:
                if self._events is None:
                    if not self._segments and self._preamble > MAX_PREAMBLE:
                        raise _Refused(405, f"No part found in the first {MAX_PREAMBLE} bytes of the body")
                    if self._chunks:
                        assert self._parser is not None
                        chunk = self._chunks.popleft()
                        if not self._segments:
                            self._preamble += len(chunk)
                        self._events = self._parser.parse(chunk)
                    elif self._body_done:
                        self._end_of_body()
                        return
                    else:
                        return
                try:
                    event = next(self._events)
                except StopIteration:
                    self._events = None
                    continue
                except MultipartError as e:
                    raise self._malformed(e) from None
                if isinstance(event, MultipartSegment):
                    self._part_started(event)
                elif event is None:
                    self._part_ended()
                else:
                    self._part_data(event)
        except _Refused as refusal:
            self._refuse(refusal.status, refusal.reason)
        except Exception:
            self._crashed(Failure())
        finally:
            self._running = False
        # Pausing the transport takes effect at the next read: the one being
        # handled is done, so make sure a pause asked for meanwhile holds.
        if self._transport_paused and self._connected:
            self._transport.pauseProducing()

    def _malformed(self, error: MultipartError) -> _Refused:
        if not self._segments:
            return _Refused(405, f"No part found: the body is not valid multipart/form-data ({error})")
        return _Refused(400, f"Malformed multipart body: {error}")

    def _part_started(self, segment: MultipartSegment) -> None:
        self._segments += 1
        if self._segments == 1:
            if segment.name != "data":
                raise _Refused(405, f'The first part must be "data", not {segment.name!r}')
            self._part = "data"
            return
        if segment.name != "file":
            which = "The second part" if self._segments == 2 else f"Part {self._segments}"
            raise _Refused(405, f'{which} must be "file", not {segment.name!r}')
        if self._files == MAX_FILES:
            raise _Refused(405, f"At most {MAX_FILES} files can be uploaded at once")
        self._files += 1
        self._part = "file"
        pipe = Pipe(self._reactor, filename=segment.filename, content_type=segment.content_type)
        if self._inputs is None:
            self._start_job(pipe)
        else:
            self._inputs.add(pipe)
            self._feed(pipe)

    def _part_data(self, chunk: bytes) -> None:
        if self._part == "data":
            self._data_size += len(chunk)
            if self._data_size > MAX_DATA_SIZE:
                self._counts.limit_hit("upload_data")
                raise _Refused(413, f"The data part is larger than {MAX_DATA_SIZE} bytes")
            self._data.append(chunk)
        elif self._part == "file" and self._pipe is not None:
            try:
                self._pipe.write(chunk)
                self._counts.uploaded(len(chunk))
                self._file_bytes += len(chunk)
                if self._transfer is not None:
                    self._transfer.moved(self._file_bytes)
            except Exception:
                # The pipe broke: its producer has been stopped (and the
                # upload refused) already, or is about to be.
                self._pipe_broke(self._pipe)

    def _part_ended(self) -> None:
        if self._part == "data":
            self._data_ended()
        elif self._part == "file" and self._pipe is not None:
            pipe = self._pipe
            self._drop_producer()
            pipe.close()
        self._part = None

    def _data_ended(self) -> None:
        raw = b"".join(self._data)
        self._data = []
        try:
            # The WebSocket's JSON: the protocol's extended values ($date, $set...) alike.
            data = wire_json.loads(raw)
        except ValueError as e:
            raise _Refused(400, f"The data part is not valid JSON: {e}") from None
        except RecursionError:
            raise _Refused(400, "The data part is not valid JSON: nested too deeply") from None
        if not isinstance(data, dict) or "method" not in data:
            raise _Refused(422, 'The data part has no "method"')
        name = data["method"]
        if not isinstance(name, str):
            raise _Refused(422, 'The "method" of the data part must be a string')
        params = data.get("params")
        if params is None:
            params = []
        if not isinstance(params, list):
            raise _Refused(412, 'The "params" of the data part must be an array')
        try:
            method = self._middleware.method(name, self._session)
        except MethodNotFound as e:
            raise _Refused(422, e.errmsg) from None
        try:
            self._middleware.check_call(self._session, method)
        except AccessDenied as e:
            raise _Refused(403, e.errmsg) from None
        options = method.spec.job
        if options is None:
            raise _Refused(412, f"Method {name!r} is not a job: it takes no upload")
        if "input" not in options.pipes and options.check_pipes:
            raise _Refused(412, f"Method {name!r} takes no input pipe")
        self._method = method
        self._params = params

    def _end_of_body(self) -> None:
        assert self._parser is not None
        try:
            self._parser.close()
        except MultipartError:
            if not self._segments:
                raise _Refused(405, "No part found in the body") from None
            raise _Refused(400, "The body ended before the closing multipart boundary") from None
        if not self._segments:
            raise _Refused(405, "No part found in the body")
        if not self._files:
            raise _Refused(405, 'No "file" part after "data"')
        if self._starting:
            # Answered when the job's id is known (or the call failed).
            self._busy = True
            return
        assert self._inputs is not None and self._job is not None
        if _stopped(self._job):
            raise _Refused(412, self._job_failure(self._job))
        self._inputs_done = True
        self._inputs.finish()
        if self._transfer is not None:
            # The size is exact now.
            self._transfer.expect(self._file_bytes)
            self._transfer.finish()
        self._answered = True
        self._pauses.clear()
        self._steer()
        log.info(
            "Upload from {peer}: {files} file(s) handed to job {job_id} ({method})",
            peer=self._peer(),
            files=self._files,
            job_id=self._job.id,
            method=self._job.method,
        )
        self._respond(200, {"job_id": self._job.id})

    # -- the job --------------------------------------------------------------

    def _start_job(self, pipe: Pipe) -> None:
        """
        Call the method with C{pipe} as the job's first input.

        The upload goes on streaming while the call's Deferred is pending
        (the middleware may record the job first): the pipe holds the data
        back.  Only the answer waits for the job's id.
        """
        assert self._method is not None and self._session is not None
        self._inputs = InputPipes(pipe)
        self._feed(pipe)
        self._starting = True
        try:
            d = self._middleware.call_from(
                self._session, self._method.name, self._params, pipes=Pipes(inputs=self._inputs)
            )
        except Exception:
            self._call_failed(Failure())
            return
        d.addCallbacks(self._job_started, self._call_failed).addErrback(self._crashed)

    def _job_started(self, job: Any) -> None:
        self._starting = False
        if self._answered:
            return
        if not isinstance(job, Job) or job.pipes.inputs is not self._inputs:
            # A job queued behind an equal one (lock_queue_size) has no pipes of ours.
            self._refuse(412, "The method did not start a job for this upload")
            return
        self._job = job
        log.info(
            "Upload from {peer} started job {job_id} ({method})",
            peer=self._peer(),
            job_id=job.id,
            method=job.method,
        )
        if _stopped(job):
            # It failed while its start was being recorded.
            self._refuse(412, self._job_failure(job))
            return
        job.wait().addCallback(self._job_ended)
        self._transfer = transfer_progress(job)
        self._transfer.expect(self._expected_file_bytes())
        self._transfer.moved(self._file_bytes)
        if self._busy:
            # The body ended before the job's id was known.
            self._busy = False
            self._run()

    def _call_failed(self, failure: Failure) -> None:
        self._starting = False
        error = failure.value
        if isinstance(error, NotAuthenticated):
            status = 401
        elif isinstance(error, MethodNotFound):
            status = 422
        elif isinstance(error, CallError) and error.errno in (errno.EACCES, errno.EPERM):
            status = 403
        elif isinstance(error, CallError) and error.errno == errno.ESHUTDOWN:
            # The daemon drains: come back to another one, or later.
            status = 503
        elif isinstance(error, CallError):
            status = 412
        else:
            log.failure("Starting {method} for an upload failed", failure, method=self._method.name if self._method else None)
            self._refuse(500, "Internal error while starting the job")
            return
        self._refuse(status, error.errmsg if isinstance(error, CallError) else str(error))

    def _job_ended(self, _: object) -> None:
        job = self._job
        if self._answered or job is None or job.state is JobState.SUCCESS:
            # A job may end without reading all its input: the rest is dropped.
            return
        self._refuse(412, self._job_failure(job))

    def _crashed(self, failure: Failure) -> None:
        """
        A bug: say so, rather than leave the client waiting.
        """
        log.failure("Upload from {peer} failed", failure, peer=self._peer())
        self._refuse(500, "Internal error")

    def _job_failure(self, job: Job) -> str:
        if job.state.finished:
            how = job.state.value.lower()
        else:
            # Its end is being recorded, or it is being aborted: its error is known.
            how = "aborted" if job.was_aborted else "failed"
        return f"Job {job.id} ({job.method}) {how} while uploading: {job.error or 'no reason given'}"

    def _pipe_broke(self, pipe: Pipe) -> None:
        if self._answered or self._starting:
            # While the job starts, its end is told by _job_started or _call_failed.
            return
        job = self._job
        if job is not None and _stopped(job):
            self._refuse(412, self._job_failure(job))
            return
        reason = pipe.failure.getErrorMessage() if pipe.failure is not None else "the pipe broke"
        self._refuse(412, f"The job stopped reading its input: {reason}")

    def _expected_file_bytes(self) -> int | None:
        """
        About how many bytes the files will be: the body's C{Content-Length}
        less the data part, so a little more than the files (the part
        headers and boundaries count too).  L{None} for a chunked body.
        """
        length = self._request.requestHeaders.getRawHeaders(b"Content-Length")
        try:
            size = int(length[0]) if length else None
        except ValueError:
            size = None
        if size is None:
            return None
        return max(size - self._data_size, self._file_bytes)

    # -- pipes and flow control ------------------------------------------------

    def _feed(self, pipe: Pipe) -> None:
        """
        Make C{pipe} the one the file data goes to, with the connection as its producer.
        """
        self._pipe = pipe
        self._producer = _PipeProducer(self, pipe)
        pipe.registerProducer(self._producer, True)

    def _drop_producer(self) -> None:
        pipe, producer = self._pipe, self._producer
        self._pipe = self._producer = None
        if pipe is not None and producer is not None:
            pipe.unregisterProducer()
            self._resume(producer)

    def _fail_inputs(self, reason: str) -> None:
        if self._inputs is not None and not self._inputs_done:
            self._inputs_done = True
            self._inputs.fail(UploadInterrupted(reason))

    def _pause(self, reason: object) -> None:
        self._pauses.add(reason)
        self._steer()

    def _resume(self, reason: object) -> None:
        self._pauses.discard(reason)
        self._steer()

    def _steer(self) -> None:
        """
        Pause the socket while anything asks for it, resume it once nothing does.

        The channel's idle timeout is off meanwhile: a client held back by a
        slow job is not idle.
        """
        if not self._connected:
            return
        if self._pauses and not self._transport_paused:
            self._transport_paused = True
            self._saved_timeout = self._channel.setTimeout(None)
            self._transport.pauseProducing()
        elif not self._pauses and self._transport_paused:
            self._transport_paused = False
            self._channel.setTimeout(self._saved_timeout)
            self._transport.resumeProducing()

    # -- answering -------------------------------------------------------------

    def _refuse(self, status: int, reason: str) -> None:
        """
        Answer C{status} with C{{"error": reason}} and stop the upload; fail
        the job's inputs if the files were not all handed over.
        """
        if self._answered:
            return
        self._answered = True
        self._events = None
        self._chunks.clear()
        self._fail_inputs(f"The upload failed ({status}): {reason}")
        self._drop_producer()
        self._pauses.clear()
        self._steer()
        log.info(
            "Upload from {peer} refused with {status}: {reason}",
            peer=self._peer(),
            status=status,
            reason=reason,
        )
        if not self._connected:
            return
        request = self._request
        if status == 401:
            request.setHeader(b"WWW-Authenticate", b'Basic realm="midjobs", charset="UTF-8"')
        if not self._body_done:
            # The rest of the body is not read: this connection ends here.
            request.setHeader(b"Connection", b"close")
            self._channel.persistent = False
        self._respond(status, {"error": reason})
        if self._body_done:
            return
        if self._expects_continue and not self._continue_sent and not self._received:
            # The client waits for 100 Continue before it sends the body: none comes.
            self._close()
            return
        self._linger_call = self._reactor.callLater(LINGER_SECONDS, self._close)

    def _respond(self, status: int, body: dict[str, Any]) -> None:
        if not self._connected:
            return
        request = self._request
        payload = json.dumps(body).encode("utf-8")
        request.setResponseCode(status)
        request.setHeader(b"Content-Type", b"application/json")
        request.setHeader(b"Content-Length", b"%d" % len(payload))
        request.write(payload)
        if self._body_done:
            # Only a request whose body ended may finish: the channel then
            # reads the next request (or closes, after a refusal).
            request.finish()

    def _linger_on(self, size: int) -> None:
        self._lingered += size
        if self._lingered > LINGER_BYTES:
            self._close()

    def _end_linger(self) -> None:
        if self._linger_call is not None and self._linger_call.active():
            self._linger_call.cancel()
        self._linger_call = None
        if self._connected and not self._request.finished:
            self._request.finish()

    def _close(self) -> None:
        if self._linger_call is not None and self._linger_call.active():
            self._linger_call.cancel()
        self._linger_call = None
        if self._connected:
            self._channel.loseConnection()

    # -- describing ---------------------------------------------------------------

    def _peer(self) -> str:
        peer = self._request.getClientAddress()
        host = getattr(peer, "host", None)
        return f"{host}:{peer.port}" if host is not None else str(peer)

    def _interrupted_reason(self) -> str:
        where = f"{self._received} bytes into the body"
        if self._pipe is not None:
            name = f" {self._pipe.filename!r}" if self._pipe.filename else ""
            where = f"in file {self._files}{name}, " + where
        return f"The client disconnected before the upload ended ({where})"
