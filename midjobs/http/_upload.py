# twisted.web (Request, HTTPChannel) and twisted.python.failure are unannotated.
# mypy: allow-untyped-calls
"""
One C{POST /_upload}: a multipart body streamed straight into a job's input pipes.

L{serve_upload} gets the request once its headers are in, with its body as a
L{RequestBody<midjobs.http._body.RequestBody>}.  The L{Upload} then logs the
caller in; the body is not read meanwhile, so C{Expect: 100-continue} is
answered only after a good login and a client that waits for it never sends
a refused body.  The body then goes through a
C{multipart.PushMultipartParser}: C{data} (JSON C{{"method", "params"}})
first, then one to five C{file} parts (C{docs/protocol.rst}, "POST /_upload").  The job starts when the
first file's headers arrive, with that file as its input pipe; every later
file is added to C{job.pipes.inputs}.  The body is the push producer of the
pipe being written: a full pipe pauses the connection, so memory stays
bounded whatever the size of the files, and the upload goes as fast as the
job reads.  The answer, C{{"job_id": N}}, comes once the body ended and the
last pipe was closed.

The bytes of the file parts handed to the pipes count in the job's transfer
figures (C{progress.extra}'s C{bytes}, C{rate}; L{midjobs.transfer_progress}),
against a total taken from C{Content-Length} less the data part (a few
hundred bytes too many: part headers and boundaries), made exact once the
body has ended.

A refused upload (see L{STATUS}) is answered at once with C{{"error":
reason}}; if the body had not ended, with C{Connection: close} (HTTP/1.x),
and what the client still sends is dropped for a short while so that it can
read the answer (L{RequestBody.drop_rest<midjobs.http._body.RequestBody.drop_rest>}).
An upload that breaks after the job started (a bad body, a client gone, a
sixth file) fails the job's inputs with L{UploadInterrupted}: the job's next
read raises, it never sees a short file.
"""

from __future__ import annotations

import errno
import json
from enum import Enum
from typing import Any, AsyncIterator, TypeVar

# multipart ships no type information.
from multipart import (  # type: ignore[import-untyped]
    MultipartError,
    MultipartSegment,
    PushMultipartParser,
    parse_options_header,
)
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest

from .. import wire_json
from ..access import AccessDenied
from ..arguments import MAX_CALL_SIZE
from ..auth import IUser
from ..errors import CallError
from ..job import Job, JobState
from ..logs import logger
from ..counts import NO_COUNTS, ICounts
from ..middleware import Method, MethodNotFound, Middleware, NotAuthenticated
from ..pipe import InputPipes, Pipe, PipeBrokenError, Pipes
from ..transfer_progress import TransferProgress, transfer_progress
from ._auth import AuthenticationFailed, authenticate
from ._body import BodyProducer, BodyState, RequestBody, StreamingRequest
from ._session import HttpSession

__all__ = ["MAX_FILES", "STATUS", "UPLOAD_PATH", "Upload", "UploadInterrupted", "UploadPhase", "serve_upload"]

log = logger(__name__)

_T = TypeVar("_T")

#: The path the upload is served at.
UPLOAD_PATH = b"/_upload"
#: The most C{file} parts one upload may carry.
MAX_FILES = 5
#: The largest C{data} part (it is held in memory to be parsed): the largest call.
MAX_DATA_SIZE = MAX_CALL_SIZE
#: How much body may come before the first part starts (a multipart
#: preamble); past it, the body is taken for something else than multipart.
MAX_PREAMBLE = 64 * 1024

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


class UploadPhase(Enum):
    """
    Where an L{Upload} is.
    """

    #: The caller's credentials are being checked; the body waits.
    LOGIN = "login"
    #: The parts are being read: the data part, then the files, streamed to
    #: the job (which may still be starting).
    PARTS = "parts"
    #: The body ended; the answer waits for the job's id.
    FINISHING = "finishing"
    #: Answered (the job's id, or a refusal): nothing more is done.
    ANSWERED = "answered"
    #: The client went away before the answer.
    INTERRUPTED = "interrupted"

    @property
    def over(self) -> bool:
        return self in (UploadPhase.ANSWERED, UploadPhase.INTERRUPTED)


class _Refused(Exception):
    """
    End the upload with an HTTP error: C{status} and a C{reason} for the client.
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(status, reason)
        self.status = status
        self.reason = reason


class _Over(Exception):
    """
    The upload was answered, or its client went away, while it waited.
    """


def _stopped(job: Job) -> bool:
    """
    Whether C{job} failed or was aborted, even if its end is still being
    recorded (then its C{state} is still C{RUNNING}, but its error is known).
    """
    if job.state in (JobState.FAILED, JobState.ABORTED) or job.was_aborted:
        return True
    return bool(getattr(job, "ending", False)) and job.error is not None


def _job_failure(job: Job) -> str:
    if job.state.finished:
        how = job.state.value.lower()
    else:
        # Its end is being recorded, or it is being aborted: its error is known.
        how = "aborted" if job.was_aborted else "failed"
    return f"Job {job.id} ({job.method}) {how} while uploading: {job.error or 'no reason given'}"


def origin(request: IRequest) -> str:
    """
    The client's host (behind the trusted proxies) for a log line.
    """
    address = request.getClientAddress()
    host = getattr(address, "host", None)
    return host if isinstance(host, str) else "unix" if type(address).__name__ == "UNIXAddress" else str(address)


def _parser(request: IRequest) -> PushMultipartParser:
    """
    A multipart parser for the body of C{request}.

    @raise _Refused: 405, the body is not C{multipart/form-data} with a boundary.
    """
    content_type = request.requestHeaders.getRawHeaders(b"Content-Type")
    media, options = parse_options_header(content_type[0].decode("latin-1")) if content_type else ("", {})
    if media != "multipart/form-data" or not options.get("boundary"):
        raise _Refused(405, "No part found: the body must be multipart/form-data with a boundary")
    try:
        return PushMultipartParser(options["boundary"], max_segment_count=MAX_FILES + 2)
    except MultipartError as e:
        raise _Refused(405, f"No part found: bad multipart boundary ({e})") from None


def serve_upload(middleware: Middleware, request: StreamingRequest, body: RequestBody) -> None:
    """
    Serve C{POST /_upload}: C{request}'s headers are in, C{body} streams.
    """
    Upload(middleware, request, body).start()


class Upload:
    """
    One upload, from its headers to its answer: L{_run} reads it straight
    through; what happens meanwhile (the job's start, a job that fails, a
    broken pipe, a client gone) may answer first, and cancels what L{_run}
    waits for.

    @ivar phase: an L{UploadPhase}.
    """

    def __init__(self, middleware: Middleware, request: StreamingRequest, body: RequestBody) -> None:
        self._middleware = middleware
        self._request = request
        self._body = body
        #: Where uploaded bytes and the data part's limit count.
        self._counts: ICounts = getattr(middleware, "metrics", NO_COUNTS)
        self.phase = UploadPhase.LOGIN
        #: What L{_run} waits for, cancelled if the upload ends meanwhile.
        self._waiting: Deferred[Any] | None = None
        self._files = 0
        #: The file part being streamed, and the body's hold for its pipe.
        self._pipe: Pipe | None = None
        self._producer: BodyProducer | None = None
        self._inputs: InputPipes | None = None
        #: Fires with the job once the call started it (see L{_start_job}).
        self._started: Deferred[Job] | None = None
        self._job: Job | None = None
        #: The bytes of file parts handed to the job's pipes so far, and the
        #: job's transfer figures, once the job is known.
        self._file_bytes = 0
        self._transfer: TransferProgress | None = None

    def start(self) -> None:
        self._request.notifyFinish().addErrback(self._connection_lost)
        Deferred.fromCoroutine(self._run()).addErrback(self._crashed)

    # -- the upload, straight through -------------------------------------------

    async def _run(self) -> None:
        try:
            user = await self._login()
            await self._read_parts(HttpSession(self._request.getClientAddress(), user))
            self.phase = UploadPhase.FINISHING
            job = await self._wait(self._job_started())
            self._finish(job)
        except _Refused as refusal:
            self._refuse(refusal.status, refusal.reason)
        except _Over:
            pass

    async def _wait(self, waiting: Deferred[_T]) -> _T:
        """
        What C{waiting} gives, unless the upload ends meanwhile.

        @raise _Over: the upload was answered, or its client went away.
        """
        if self.phase.over:
            waiting.addErrback(lambda _: None).cancel()
            raise _Over()
        self._waiting = waiting
        try:
            result = await waiting
        except Exception:
            if self.phase.over:
                raise _Over() from None
            raise
        finally:
            self._waiting = None
        if self.phase.over:
            raise _Over()
        return result

    async def _login(self) -> IUser:
        # Through a Deferred of its own: an upload that ends meanwhile cancels
        # its wait, not the login (the throttle counts it).
        login: Deferred[IUser] = Deferred()
        Deferred.fromCoroutine(authenticate(self._middleware.logins, self._request)).chainDeferred(login)
        try:
            user = await self._wait(login)
        except AuthenticationFailed as e:
            raise _Refused(401, str(e)) from None
        except (_Over, _Refused):
            raise
        except Exception:
            log.failure("Login for an upload failed", Failure())
            raise _Refused(500, "Internal error while logging in") from None
        return user

    async def _events(self, parser: PushMultipartParser) -> AsyncIterator[MultipartSegment | bytes | None]:
        """
        The parser's events for the whole body.

        @raise _Refused: the body is not multipart, is malformed, or ends
            before its closing boundary.
        """
        started = False
        preamble = 0
        while True:
            if not started and preamble > MAX_PREAMBLE:
                raise _Refused(405, f"No part found in the first {MAX_PREAMBLE} bytes of the body")
            chunk = await self._wait(self._body.read())
            if not chunk:
                break
            if not started:
                preamble += len(chunk)
            try:
                for event in parser.parse(chunk):
                    started = True
                    yield event
            except MultipartError as e:
                if not started:
                    raise _Refused(405, f"No part found: the body is not valid multipart/form-data ({e})") from None
                raise _Refused(400, f"Malformed multipart body: {e}") from None
        try:
            parser.close()
        except MultipartError:
            if not started:
                raise _Refused(405, "No part found in the body") from None
            raise _Refused(400, "The body ended before the closing multipart boundary") from None
        if not started:
            raise _Refused(405, "No part found in the body")

    async def _read_parts(self, session: HttpSession) -> None:
        parser = _parser(self._request)
        self.phase = UploadPhase.PARTS
        segments = 0
        data: list[bytes] = []
        data_size = 0
        method: Method | None = None
        params: list[Any] = []
        async for event in self._events(parser):
            if isinstance(event, MultipartSegment):
                segments += 1
                if segments == 1:
                    if event.name != "data":
                        raise _Refused(405, f'The first part must be "data", not {event.name!r}')
                    continue
                if event.name != "file":
                    which = "The second part" if segments == 2 else f"Part {segments}"
                    raise _Refused(405, f'{which} must be "file", not {event.name!r}')
                if self._files == MAX_FILES:
                    raise _Refused(405, f"At most {MAX_FILES} files can be uploaded at once")
                self._files += 1
                pipe = Pipe(self._middleware.reactor, filename=event.filename, content_type=event.content_type)
                if self._inputs is None:
                    assert method is not None
                    self._start_job(session, method, params, pipe, data_size)
                else:
                    self._inputs.add(pipe)
                    self._feed(pipe)
            elif event is None:
                if segments == 1:
                    method, params = self._call_of(session, b"".join(data))
                    data = []
                else:
                    self._close_pipe()
            elif segments == 1:
                data_size += len(event)
                if data_size > MAX_DATA_SIZE:
                    self._counts.limit_hit("upload_data")
                    raise _Refused(413, f"The data part is larger than {MAX_DATA_SIZE} bytes")
                data.append(event)
            else:
                await self._write(event)
        if not self._files:
            raise _Refused(405, 'No "file" part after "data"')

    def _call_of(self, session: HttpSession, raw: bytes) -> tuple[Method, list[Any]]:
        """
        The method and parameters of the data part C{raw}.

        @raise _Refused: they are not valid, or the caller may not call it
            with an upload.
        """
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
            method = self._middleware.method(name, session)
        except MethodNotFound as e:
            raise _Refused(422, e.errmsg) from None
        try:
            self._middleware.check_call(session, method)
        except AccessDenied as e:
            raise _Refused(403, e.errmsg) from None
        options = method.spec.job
        if options is None:
            raise _Refused(412, f"Method {name!r} is not a job: it takes no upload")
        if "input" not in options.pipes and options.check_pipes:
            raise _Refused(412, f"Method {name!r} takes no input pipe")
        return method, params

    def _finish(self, job: Job) -> None:
        """
        The body ended and the job runs: hand the inputs over and answer.
        """
        if _stopped(job):
            raise _Refused(412, _job_failure(job))
        assert self._inputs is not None
        self.phase = UploadPhase.ANSWERED
        self._inputs.finish()
        if self._transfer is not None:
            # The size is exact now.
            self._transfer.expect(self._file_bytes)
            self._transfer.finish()
        log.info(
            "Upload from {peer}: {files} file(s) handed to job {job_id} ({method})",
            peer=self._peer(),
            files=self._files,
            job_id=job.id,
            method=job.method,
        )
        self._respond(200, {"job_id": job.id})

    # -- the pipes ------------------------------------------------------------------

    def _feed(self, pipe: Pipe) -> None:
        """
        Make C{pipe} the one the file data goes to, with the body as its producer.
        """
        self._pipe = pipe
        self._producer = self._body.producer(self._pipe_stopped)
        pipe.registerProducer(self._producer, True)

    async def _write(self, chunk: bytes) -> None:
        pipe = self._pipe
        assert pipe is not None
        try:
            room = pipe.write(chunk)
        except Exception:
            await self._pipe_broke(pipe)
            return
        self._counts.uploaded(len(chunk))
        self._file_bytes += len(chunk)
        if self._transfer is not None:
            self._transfer.moved(self._file_bytes)
        try:
            await self._wait(room)
        except (_Over, _Refused):
            raise
        except Exception:
            await self._pipe_broke(pipe)

    def _close_pipe(self) -> None:
        pipe = self._pipe
        self._drop_producer()
        if pipe is not None:
            pipe.close()

    def _drop_producer(self) -> None:
        pipe, producer = self._pipe, self._producer
        self._pipe = self._producer = None
        if pipe is not None and producer is not None:
            pipe.unregisterProducer()
            producer.stopProxying()

    def _pipe_stopped(self) -> None:
        """
        The pipe stopped the body: it broke.  Unless the job is starting
        (its start tells what happened), answer now, whatever L{_run} waits for.
        """
        pipe = self._pipe
        if self.phase.over or pipe is None or self._job is None:
            return
        self._refuse(*self._broken(pipe))

    async def _pipe_broke(self, pipe: Pipe) -> None:
        """
        A write found C{pipe} broken.

        @raise _Refused: why.
        """
        if self._job is None and self._started is not None:
            # The job is starting: its start tells what happened.
            await self._wait(self._started)
        raise _Refused(*self._broken(pipe))

    def _broken(self, pipe: Pipe) -> tuple[int, str]:
        job = self._job
        if job is not None and _stopped(job):
            return 412, _job_failure(job)
        reason = pipe.failure.getErrorMessage() if pipe.failure is not None else "the pipe broke"
        return 412, f"The job stopped reading its input: {reason}"

    def _fail_inputs(self, reason: str) -> None:
        if self._inputs is not None:
            self._inputs.fail(UploadInterrupted(reason))

    # -- the job ----------------------------------------------------------------------

    def _start_job(self, session: HttpSession, method: Method, params: list[Any], pipe: Pipe, data_size: int) -> None:
        """
        Call the method with C{pipe} as the job's first input.

        The upload goes on streaming while the call's Deferred is pending
        (the middleware may record the job first): the pipe holds the data
        back.  Only the answer waits for the job (L{_job_started}).
        """
        self._inputs = InputPipes(pipe)
        self._feed(pipe)
        started: Deferred[Job] = Deferred()
        self._started = started
        try:
            d = self._middleware.call_from(session, method.name, params, pipes=Pipes(inputs=self._inputs))
        except Exception:
            self._call_failed(Failure(), method)
            return
        d.addCallbacks(self._job_started_by, self._call_failed, callbackArgs=(data_size,), errbackArgs=(method,))
        d.addErrback(self._crashed)

    def _job_started(self) -> Deferred[Job]:
        assert self._started is not None
        return self._started

    def _job_started_by(self, job: object, data_size: int) -> None:
        if self.phase.over:
            return
        if not isinstance(job, Job) or job.pipes.inputs is not self._inputs:
            # A job queued behind an equal one (lock_queue_size) has no pipes of ours.
            self._refuse(412, "The method did not start a job for this upload")
            return
        self._job = job
        log.info("Upload from {peer} started job {job_id} ({method})", peer=self._peer(), job_id=job.id, method=job.method)
        if _stopped(job):
            # It failed while its start was being recorded.
            self._refuse(412, _job_failure(job))
            return
        job.wait().addCallback(self._job_ended)
        self._transfer = transfer_progress(job)
        self._transfer.expect(self._expected_file_bytes(data_size))
        self._transfer.moved(self._file_bytes)
        assert self._started is not None
        self._started.callback(job)

    def _call_failed(self, failure: Failure, method: Method) -> None:
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
            log.failure("Starting {method} for an upload failed", failure, method=method.name)
            self._refuse(500, "Internal error while starting the job")
            return
        self._refuse(status, error.errmsg if isinstance(error, CallError) else str(error))

    def _job_ended(self, _: object) -> None:
        job = self._job
        if self.phase.over or job is None or job.state is JobState.SUCCESS:
            # A job may end without reading all its input: the rest is dropped.
            return
        self._refuse(412, _job_failure(job))

    def _expected_file_bytes(self, data_size: int) -> int | None:
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
        return max(size - data_size, self._file_bytes)

    # -- the end ------------------------------------------------------------------------

    def _crashed(self, failure: Failure) -> None:
        """
        A bug: say so, rather than leave the client waiting.
        """
        log.failure("Upload from {peer} failed", failure, peer=self._peer())
        self._refuse(500, "Internal error")

    def _end(self, phase: UploadPhase) -> None:
        """
        Enter C{phase} (L{UploadPhase.over}): stop streaming, and cancel what
        L{_run} waits for.
        """
        self.phase = phase
        self._drop_producer()
        if self._waiting is not None:
            self._waiting.cancel()

    def _refuse(self, status: int, reason: str) -> None:
        """
        Answer C{status} with C{{"error": reason}} and stop the upload; fail
        the job's inputs if the files were not all handed over.
        """
        if self.phase.over:
            return
        self._end(UploadPhase.ANSWERED)
        self._fail_inputs(f"The upload failed ({status}): {reason}")
        log.info("Upload from {peer} refused with {status}: {reason}", peer=self._peer(), status=status, reason=reason)
        body = self._body
        if status == 401:
            self._request.setHeader(b"WWW-Authenticate", b'Basic realm="midjobs", charset="UTF-8"')
        if body.state is BodyState.STREAMING:
            # The rest of the body is not read: this connection ends here.
            body.close_after_response()
        self._respond(status, {"error": reason})
        body.drop_rest()

    def _respond(self, status: int, answer: dict[str, Any]) -> None:
        request = self._request
        payload = json.dumps(answer).encode("utf-8")
        request.setResponseCode(status)
        request.setHeader(b"Content-Type", b"application/json")
        request.setHeader(b"Content-Length", b"%d" % len(payload))
        request.write(payload)
        if self._body.state is BodyState.ENDED:
            # Only a request whose body ended may finish: the channel then
            # reads the next request (or closes, after a refusal).
            request.finish()

    def _connection_lost(self, failure: Failure) -> None:
        if self.phase.over:
            return
        reason = self._interrupted_reason()
        self._end(UploadPhase.INTERRUPTED)
        self._fail_inputs(reason)
        log.info("Upload from {peer} interrupted: the client disconnected", peer=self._peer())

    # -- describing ---------------------------------------------------------------------

    def _peer(self) -> str:
        peer = self._request.getClientAddress()
        host = getattr(peer, "host", None)
        return f"{host}:{getattr(peer, 'port', '')}" if host is not None else str(peer)

    def _interrupted_reason(self) -> str:
        where = f"{self._body.received} bytes into the body"
        if self._pipe is not None:
            name = f" {self._pipe.filename!r}" if self._pipe.filename else ""
            where = f"in file {self._files}{name}, " + where
        return f"The client disconnected before the upload ended ({where})"
