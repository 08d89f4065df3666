"""Sending jobs to `warren serve` (DESIGN.md, *HTTP*), standard library only.

    from warren_stage.client import Client

    warren = Client("http://127.0.0.1:8080", token="...")
    sent = warren.send("lookup", {"company": "Acme"}, key="order-1234")
    state = warren.wait(sent.job, timeout=120)          # {"state": "done", ...}
    warren.send_many("lookup", rows, id_field="order_id")
    warren.cancel(sent.job)

Every call has a time limit (`timeout`, default the client's): within it,
a 429 is waited out as its `Retry-After` says, and a 503 or a lost answer
is sent again, only what the broker did not confirm, with the same ids.

Ids: a resend is harmless only when it carries the ids of the first try
(warren's sink writes an id once, jobs count ids). So the client sets them
itself: `send` always has an `Idempotency-Key` (yours, or one it makes up),
and `send_many` with `id_field` takes each message's id from that field.
A batch without `id_field` gets ids made up by the server: after a 503 the
lines it did not confirm are sent again with the ids the 503 names when it
names them, else (a server that names only the confirmed ones) without ids,
and a lost answer is not resent blind but raised (`Unknown`). Give
`id_field` when a duplicate matters.
"""

import json
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

__all__ = ["Client", "Sent", "ClientError", "Refused", "Busy", "Unavailable", "Unknown", "Timeout"]

TERMINAL = ("done", "failed", "cancelled")


class ClientError(Exception):
    """A call to `warren serve` failed: `status` (None without an answer)
    and `body` (the decoded answer, or its text) say how."""

    def __init__(self, message, status=None, body=None):
        super().__init__(message)
        self.status = status
        self.body = body


class Refused(ClientError):
    """The server refused the request (a 4xx other than 429): resending it
    will not help. `body["lines"]` names the bad lines of a batch."""


class Busy(ClientError):
    """429 until the call's time limit: the stage's backlog is over
    `serve.max_backlog`. `retry_after` is the server's advice (seconds)."""

    def __init__(self, message, status=None, body=None, retry_after=None):
        super().__init__(message, status, body)
        self.retry_after = retry_after


class Unavailable(ClientError):
    """503 (the broker unreachable) until the call's time limit.
    `confirmed` lists the ids the broker did take (with the same ids, a
    later resend of the rest is safe)."""

    def __init__(self, message, status=None, body=None, confirmed=()):
        super().__init__(message, status, body)
        self.confirmed = list(confirmed)


class Unknown(ClientError):
    """No answer to a batch without ids: whether the broker took it is not
    known, and resending could make duplicates. Send with `id_field`."""


class Timeout(ClientError):
    """The call's time limit passed (`wait`: the job did not settle;
    `body` holds its last state)."""


class Sent:
    """What `send` / `send_many` got: `ids` of the messages (in order),
    `job` (the one job of a single message, else None), `attempts` (the
    requests it took)."""

    def __init__(self, ids, attempts):
        self.ids = ids
        self.job = ids[0] if len(ids) == 1 else None
        self.attempts = attempts

    def __repr__(self):
        return "Sent(ids=%r, attempts=%d)" % (self.ids, self.attempts)


class Client:
    """A client of one `warren serve` at `base_url`; `token` for
    `serve.token`; `timeout` (seconds) the default time limit of a call."""

    def __init__(self, base_url, token=None, timeout=30.0):
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def send(self, stage, body, key=None, callback=None, delay=None, at=None, timeout=None):
        """Sends one message (any JSON value) to `stage`, with `key` as its
        id (made up when not given: the same on every resend); `callback`
        gets the job's state when it settles, `delay` (seconds or "30s") or
        `at` (RFC 3339) holds it back. Returns `Sent` once the broker
        confirmed it."""
        key = key or uuid.uuid4().hex
        data = _line(body, "the body").encode("utf-8")
        query = _query(callback=callback, delay=delay, at=at)
        url = "%s/v1/stages/%s/messages%s" % (self.base_url, _path(stage), query)
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        attempts = 0
        while True:
            attempts += 1
            answer = self._post(url, data, "application/json", {"Idempotency-Key": key}, deadline,
                                resend_blind=True)
            if answer.status == 202 or key in answer.confirmed:
                return Sent([key], attempts)
            self._pause(answer, deadline, attempts)

    def send_many(self, stage, bodies, id_field=None, callback=None, delay=None, at=None, timeout=None):
        """Sends the messages (up to 500 a request; more are split) to
        `stage` as NDJSON; each one's id is its field `id_field` when given
        (see the module's note on ids). Returns `Sent` with every id, once
        the broker confirmed them all."""
        bodies = list(bodies)
        lines = [_line(body, "message %d" % n) for n, body in enumerate(bodies)]
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        ids, attempts = [], 0
        for start in range(0, len(lines), 500):
            part = _Batch(lines[start:start + 500], bodies[start:start + 500], id_field)
            sent = self._send_batch(stage, part, callback, delay, at, deadline)
            ids += sent.ids
            attempts += sent.attempts
        return Sent(ids, attempts)

    def _send_batch(self, stage, batch, callback, delay, at, deadline):
        attempts = 0
        while True:
            attempts += 1
            lines = batch.left()
            single = batch.id_field is None and batch.known_ids
            if single:
                # The server named the ids of lines it did not confirm: each
                # goes again under its own id.
                for n in lines:
                    self.send(stage, batch.bodies[n], key=batch.ids[n], callback=callback, delay=delay,
                              at=at, timeout=max(0.001, deadline - time.monotonic()))
                return Sent(batch.ids, attempts)
            query = _query(id_field=batch.id_field, callback=callback, delay=delay, at=at)
            url = "%s/v1/stages/%s/messages%s" % (self.base_url, _path(stage), query)
            data = "".join(batch.lines[n] + "\n" for n in lines).encode("utf-8")
            answer = self._post(url, data, "application/x-ndjson", {}, deadline,
                                resend_blind=batch.id_field is not None)
            if answer.status == 202:
                batch.accepted(lines, answer.body.get("ids", []))
                return Sent(batch.ids, attempts)
            batch.partly(lines, answer)
            self._pause(answer, deadline, attempts)

    def job(self, job_id, wait=None, timeout=None):
        """The job's state (`GET /v1/jobs/{id}`): a dict with `state`
        ("unknown", "queued", ..., "done", "failed", "cancelled"), counts,
        dead letters, result. `wait` (seconds, at most 60) returns as soon
        as it settles."""
        query = "?wait=%dms" % int(wait * 1000) if wait else ""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout) + (wait or 0)
        status, body, _ = self._request("GET", "%s/v1/jobs/%s%s" % (self.base_url, _path(job_id), query),
                                        None, {}, deadline)
        if status == 404 and isinstance(body, dict) and body.get("state") == "unknown":
            return body
        if status != 200:
            raise _refused("GET /v1/jobs/%s" % job_id, status, body)
        return body

    def wait(self, job_id, timeout=None):
        """Waits until the job is done, failed or cancelled, and returns its
        state; raises `Timeout` (with the last state) after `timeout`."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            left = deadline - time.monotonic()
            state = self.job(job_id, wait=max(0.001, min(30.0, left)), timeout=max(1.0, left))
            if state.get("state") in TERMINAL:
                return state
            if time.monotonic() >= deadline:
                raise Timeout("job %s did not settle in time (last state: %s)" % (job_id, state.get("state")),
                              body=state)

    def cancel(self, job_id, timeout=None):
        """Cancels the job (`DELETE /v1/jobs/{id}`): its queued messages are
        dropped, running handlers see it, it settles as `cancelled`."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        status, body, _ = self._request("DELETE", "%s/v1/jobs/%s" % (self.base_url, _path(job_id)),
                                        None, {}, deadline)
        if status == 405:
            raise Refused("this warren serve cannot cancel jobs (no DELETE /v1/jobs/{id}): a newer warren can",
                          status, body)
        if status not in (200, 202, 204):
            raise _refused("DELETE /v1/jobs/%s" % job_id, status, body)
        return body

    # The HTTP exchanges.

    def _post(self, url, data, content_type, headers, deadline, resend_blind):
        """One POST: an `_Answer` for 202, 429 and 503 (the caller resends),
        or raises (4xx, or no answer when resending blind is not safe)."""
        headers = dict(headers, **{"Content-Type": content_type})
        try:
            status, body, answer_headers = self._request("POST", url, data, headers, deadline)
        except ClientError as error:
            if error.status is None and resend_blind and time.monotonic() < deadline:
                return _Answer(None, {}, {})  # lost answer: resend, same ids
            if error.status is None and resend_blind:
                raise Timeout("%s, within the call's time limit" % error) from None
            if error.status is None:
                raise Unknown("%s; the batch may or may not have been taken (no ids to resend it safely: "
                              "send with id_field)" % error, body=error.body) from None
            raise
        if status in (202, 429, 503):
            return _Answer(status, body if isinstance(body, dict) else {}, answer_headers)
        raise _refused("POST %s" % url, status, body)

    def _pause(self, answer, deadline, tries):
        """Sleeps before a resend: `Retry-After` for 429, a growing pause
        otherwise; raises when that passes the deadline."""
        left = deadline - time.monotonic()
        if answer.status == 429:
            after = _retry_after(answer.headers.get("Retry-After"))
            if after > left:
                raise Busy("429: %s (Retry-After %ss is past the call's time limit)"
                           % (answer.body.get("error", "busy"), after), 429, answer.body, after)
            time.sleep(after)
            return
        answer_pause = min(4.0, 0.25 * 2 ** min(tries - 1, 4))
        if answer_pause > left:
            if answer.status == 503:
                raise Unavailable("503: %s" % answer.body.get("error", "unavailable"), 503, answer.body,
                                  answer.body.get("confirmed", []))
            raise Timeout("no answer from %s within the call's time limit" % self.base_url)
        time.sleep(answer_pause)

    def _request(self, method, url, data, headers, deadline):
        """(status, decoded body, headers); ClientError with status None when
        there is no answer in time."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise ClientError("no time left for %s %s" % (method, url))
        headers = dict(headers, Accept="application/json")
        if self.token:
            headers["Authorization"] = "Bearer " + self.token
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=left) as response:
                return response.status, _decode(response.read()), response.headers
        except urllib.error.HTTPError as error:
            return error.code, _decode(error.read()), error.headers
        except (urllib.error.URLError, OSError, socket.timeout) as error:
            reason = getattr(error, "reason", error)
            raise ClientError("%s %s: no answer (%s)" % (method, url, reason)) from None


class _Answer:
    def __init__(self, status, body, headers):
        self.status = status
        self.body = body
        self.headers = headers
        self.confirmed = set(body.get("confirmed", []) or []) if status == 503 else set()


class _Batch:
    """The lines of one request and which of them are still to send."""

    def __init__(self, lines, bodies, id_field):
        self.lines = lines
        self.bodies = bodies
        self.id_field = id_field
        self.todo = list(range(len(lines)))
        self.known_ids = id_field is not None
        if id_field is None:
            self.ids = [None] * len(lines)
        else:
            self.ids = [_id_of(body, id_field, n) for n, body in enumerate(bodies)]

    def left(self):
        return list(self.todo)

    def accepted(self, lines, ids):
        if not self.known_ids and len(ids) == len(lines):
            for n, id_ in zip(lines, ids):
                self.ids[n] = id_
        self.todo = []

    def partly(self, lines, answer):
        """A 429, 503 or no answer: drops what was confirmed from the
        lines to send; learns the server's ids when the 503 names them."""
        if answer.status != 503:
            return
        named = answer.body.get("ids")
        if not self.known_ids and isinstance(named, list) and len(named) == len(lines):
            for n, id_ in zip(lines, named):
                self.ids[n] = id_
            self.known_ids = True
        if self.known_ids:
            self.todo = [n for n in lines if self.ids[n] not in answer.confirmed]
        else:
            # Today's server confirms in line order: the confirmed ones are
            # the first lines.
            count = len(answer.confirmed)
            for n, id_ in zip(lines[:count], answer.body.get("confirmed", [])):
                self.ids[n] = id_
            self.todo = lines[count:]


def _line(body, what):
    try:
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise TypeError("%s is not JSON: %s" % (what, error)) from None


def _id_of(body, field, n):
    value = body.get(field) if isinstance(body, dict) else None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError("message %d has no string or integer field `%s` for its id" % (n, field))
    return str(value)


def _query(**params):
    pairs = []
    for name, value in params.items():
        if value is None:
            continue
        if name == "delay" and not isinstance(value, str):
            value = "%dms" % int(value * 1000)
        pairs.append((name, value))
    return "?" + urllib.parse.urlencode(pairs) if pairs else ""


def _path(part):
    return urllib.parse.quote(str(part), safe="")


def _decode(data):
    try:
        return json.loads(data) if data else {}
    except ValueError:
        return data.decode("utf-8", "replace")


def _retry_after(value):
    """Retry-After in seconds (a number of seconds or an HTTP date)."""
    if not value:
        return 1.0
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return 1.0


def _refused(what, status, body):
    message = body.get("error") if isinstance(body, dict) else body
    return Refused("%s: %s %s" % (what, status, message), status, body)
