<?php

declare(strict_types=1);

namespace Warren;

use Warren\Client\{Busy, ClientError, Refused, Sent, Timeout, Unavailable, Unknown};

/**
 * Sends jobs to `warren serve` (DESIGN.md, *HTTP*), with PHP's curl:
 *
 *     $warren = new Warren\Client('http://127.0.0.1:8080', token: '...');
 *     $sent = $warren->send('lookup', ['company' => 'Acme'], key: 'order-1234');
 *     $state = $warren->wait($sent->job, timeout: 120);     // ['state' => 'done', ...]
 *     $warren->sendMany('lookup', $rows, idField: 'order_id');
 *     $warren->cancel($sent->job);
 *
 * Every call has a time limit (`timeout`, default the client's): within
 * it, a 429 is waited out as its `Retry-After` says, and a 503 or a lost
 * answer is sent again, only what the broker did not confirm, with the
 * same ids. The client sets the ids itself so that a resend is harmless:
 * `send` always has an `Idempotency-Key` (yours, or one it makes up);
 * `sendMany` with `idField` takes each message's id from that field. A
 * batch without `idField` gets ids made up by the server: after a 503 the
 * lines it did not confirm are sent again with the ids the 503 names when
 * it names them, else without ids, and a lost answer is not resent blind
 * but thrown (`Unknown`). Give `idField` when a duplicate matters.
 */
final class Client
{
    public const TERMINAL = ['done', 'failed', 'cancelled'];

    public function __construct(private readonly string $baseUrl, private readonly ?string $token = null, private readonly float $timeout = 30.0)
    {
        if (!extension_loaded('curl')) {
            throw new \LogicException('Warren\Client needs the curl extension (Debian: php-curl)');
        }
    }

    /** Sends one message (any JSON value) to `$stage`, with `$key` as its id
     *  (made up when not given: the same on every resend); `$callback` gets
     *  the job's state when it settles, `$delay` (seconds or "30s") or `$at`
     *  (RFC 3339) holds it back. Returns once the broker confirmed it. */
    public function send(string $stage, mixed $body, ?string $key = null, ?string $callback = null, int|float|string|null $delay = null, ?string $at = null, ?float $timeout = null): Sent
    {
        $key ??= bin2hex(random_bytes(16));
        $data = self::line($body, 'the body');
        $url = $this->url($stage, ['callback' => $callback, 'delay' => $delay, 'at' => $at]);
        $deadline = microtime(true) + ($timeout ?? $this->timeout);
        for ($attempts = 1; ; $attempts++) {
            $answer = $this->post($url, $data, 'application/json', ["Idempotency-Key: $key"], $deadline, true);
            if ($answer['status'] === 202 || in_array($key, $answer['confirmed'], true)) {
                return new Sent([$key], $attempts);
            }
            $this->pause($answer, $deadline, $attempts);
        }
    }

    /** Sends the messages (500 a request; more are split) to `$stage` as
     *  NDJSON; each one's id is its field `$idField` when given. Returns
     *  every id once the broker confirmed them all. */
    public function sendMany(string $stage, iterable $bodies, ?string $idField = null, ?string $callback = null, int|float|string|null $delay = null, ?string $at = null, ?float $timeout = null): Sent
    {
        $bodies = is_array($bodies) ? array_values($bodies) : iterator_to_array($bodies, false);
        $deadline = microtime(true) + ($timeout ?? $this->timeout);
        $ids = [];
        $attempts = 0;
        foreach (array_chunk($bodies, 500) as $chunk) {
            $sent = $this->sendBatch($stage, $chunk, $idField, ['callback' => $callback, 'delay' => $delay, 'at' => $at], $deadline);
            $ids = array_merge($ids, $sent->ids);
            $attempts += $sent->attempts;
        }
        return new Sent($ids, $attempts);
    }

    private function sendBatch(string $stage, array $bodies, ?string $idField, array $params, float $deadline): Sent
    {
        $lines = [];
        $ids = [];
        foreach ($bodies as $n => $body) {
            $lines[] = self::line($body, "message $n");
            if ($idField !== null) {
                $id = is_array($body) ? ($body[$idField] ?? null) : null;
                if (!is_string($id) && !is_int($id)) {
                    throw new \InvalidArgumentException("message $n has no string or integer field `$idField` for its id");
                }
                $ids[] = (string) $id;
            } else {
                $ids[] = null;
            }
        }
        $known = $idField !== null;
        $todo = array_keys($lines);
        $url = $this->url($stage, ['id_field' => $idField] + $params);
        for ($attempts = 1; ; $attempts++) {
            if ($known && $idField === null) {
                // The server named the ids of the lines it did not confirm:
                // each goes again under its own id.
                foreach ($todo as $n) {
                    $this->send($stage, $bodies[$n], $ids[$n], $params['callback'], $params['delay'], $params['at'], max(0.001, $deadline - microtime(true)));
                }
                return new Sent($ids, $attempts);
            }
            $data = implode('', array_map(fn ($n) => $lines[$n] . "\n", $todo));
            $answer = $this->post($url, $data, 'application/x-ndjson', [], $deadline, $idField !== null);
            if ($answer['status'] === 202) {
                $given = $answer['body']['ids'] ?? [];
                if (!$known && is_array($given) && count($given) === count($todo)) {
                    foreach (array_values($todo) as $i => $n) {
                        $ids[$n] = (string) $given[$i];
                    }
                }
                return new Sent($ids, $attempts);
            }
            if ($answer['status'] === 503) {
                $named = $answer['body']['ids'] ?? null;
                if (!$known && is_array($named) && count($named) === count($todo)) {
                    foreach (array_values($todo) as $i => $n) {
                        $ids[$n] = (string) $named[$i];
                    }
                    $known = true;
                }
                if ($known) {
                    $todo = array_values(array_filter($todo, fn ($n) => !in_array($ids[$n], $answer['confirmed'], true)));
                } else {
                    // A server that names only the confirmed ids confirms
                    // in line order: they are the first lines.
                    $count = count($answer['confirmed']);
                    foreach (array_slice(array_values($todo), 0, $count) as $i => $n) {
                        $ids[$n] = (string) $answer['confirmed'][$i];
                    }
                    $todo = array_slice(array_values($todo), $count);
                }
                if ($todo === []) {
                    return new Sent($ids, $attempts);
                }
            }
            $this->pause($answer, $deadline, $attempts);
        }
    }

    /** The job's state (`GET /v1/jobs/{id}`): `state` ("unknown", "queued",
     *  ..., "done", "failed", "cancelled"), counts, dead letters, result.
     *  `$wait` (seconds, at most 60) returns as soon as it settles. */
    public function job(string $id, ?float $wait = null, ?float $timeout = null): array
    {
        $query = $wait ? '?wait=' . (int) ($wait * 1000) . 'ms' : '';
        $deadline = microtime(true) + ($timeout ?? $this->timeout) + ($wait ?? 0);
        [$status, $body] = $this->request('GET', "{$this->baseUrl}/v1/jobs/" . rawurlencode($id) . $query, null, [], $deadline);
        if ($status === 404 && is_array($body) && ($body['state'] ?? null) === 'unknown') {
            return $body;
        }
        if ($status !== 200 || !is_array($body)) {
            throw self::refused("GET /v1/jobs/$id", $status, $body);
        }
        return $body;
    }

    /** Waits until the job is done, failed or cancelled and returns its
     *  state; throws Timeout (with the last state) after `$timeout`. */
    public function wait(string $id, ?float $timeout = null): array
    {
        $deadline = microtime(true) + ($timeout ?? $this->timeout);
        while (true) {
            $left = $deadline - microtime(true);
            $state = $this->job($id, max(0.001, min(30.0, $left)), max(1.0, $left));
            if (in_array($state['state'] ?? null, self::TERMINAL, true)) {
                return $state;
            }
            if (microtime(true) >= $deadline) {
                throw new Timeout("job $id did not settle in time (last state: " . ($state['state'] ?? '?') . ')', null, $state);
            }
        }
    }

    /** Cancels the job (`DELETE /v1/jobs/{id}`). */
    public function cancel(string $id, ?float $timeout = null): array
    {
        $deadline = microtime(true) + ($timeout ?? $this->timeout);
        [$status, $body] = $this->request('DELETE', "{$this->baseUrl}/v1/jobs/" . rawurlencode($id), null, [], $deadline);
        if ($status === 405) {
            throw new Refused('this warren serve cannot cancel jobs (no DELETE /v1/jobs/{id}): a newer warren can', $status, $body);
        }
        if (!in_array($status, [200, 202, 204], true)) {
            throw self::refused("DELETE /v1/jobs/$id", $status, $body);
        }
        return is_array($body) ? $body : [];
    }

    /** One POST: the answer for 202, 429 and 503 (the caller resends); or
     *  throws (a 4xx, or no answer when resending blind is not safe). */
    private function post(string $url, string $data, string $type, array $headers, float $deadline, bool $resendBlind): array
    {
        try {
            [$status, $body, $answerHeaders] = $this->request('POST', $url, $data, array_merge($headers, ["Content-Type: $type"]), $deadline);
        } catch (ClientError $error) {
            if ($error->status === null && $resendBlind && microtime(true) < $deadline) {
                return ['status' => null, 'body' => [], 'headers' => [], 'confirmed' => []]; // lost answer: resend, same ids
            }
            if ($resendBlind) {
                throw new Timeout($error->getMessage() . ", within the call's time limit");
            }
            throw new Unknown($error->getMessage() . '; the batch may or may not have been taken (no ids to resend it safely: send with idField)');
        }
        if (in_array($status, [202, 429, 503], true)) {
            $body = is_array($body) ? $body : [];
            $confirmed = $status === 503 && is_array($body['confirmed'] ?? null) ? $body['confirmed'] : [];
            return ['status' => $status, 'body' => $body, 'headers' => $answerHeaders, 'confirmed' => $confirmed];
        }
        throw self::refused("POST $url", $status, $body);
    }

    /** Sleeps before a resend: Retry-After for 429, a growing pause
     *  otherwise; throws when that passes the deadline. */
    private function pause(array $answer, float $deadline, int $tries): void
    {
        $left = $deadline - microtime(true);
        if ($answer['status'] === 429) {
            $after = self::retryAfter($answer['headers']['retry-after'] ?? null);
            if ($after > $left) {
                throw new Busy('429: ' . ($answer['body']['error'] ?? 'busy') . " (Retry-After {$after}s is past the call's time limit)", 429, $answer['body'], $after);
            }
            usleep((int) ($after * 1e6));
            return;
        }
        $pause = min(4.0, 0.25 * 2 ** min($tries - 1, 4));
        if ($pause > $left) {
            if ($answer['status'] === 503) {
                throw new Unavailable('503: ' . ($answer['body']['error'] ?? 'unavailable'), 503, $answer['body'], $answer['confirmed']);
            }
            throw new Timeout("no answer from {$this->baseUrl} within the call's time limit");
        }
        usleep((int) ($pause * 1e6));
    }

    /** [status, decoded body, headers (lower-case names)]; ClientError with
     *  a null status when there is no answer in time. */
    private function request(string $method, string $url, ?string $data, array $headers, float $deadline): array
    {
        $left = $deadline - microtime(true);
        if ($left <= 0) {
            throw new ClientError("no time left for $method $url");
        }
        $headers[] = 'Accept: application/json';
        if ($this->token !== null) {
            $headers[] = "Authorization: Bearer {$this->token}";
        }
        $answerHeaders = [];
        $curl = curl_init($url);
        curl_setopt_array($curl, [
            CURLOPT_CUSTOMREQUEST => $method,
            CURLOPT_RETURNTRANSFER => true,
            CURLOPT_HTTPHEADER => $headers,
            CURLOPT_TIMEOUT_MS => max(1, (int) ($left * 1000)),
            CURLOPT_HEADERFUNCTION => static function ($curl, string $line) use (&$answerHeaders): int {
                $parts = explode(':', $line, 2);
                if (count($parts) === 2) {
                    $answerHeaders[strtolower(trim($parts[0]))] = trim($parts[1]);
                }
                return strlen($line);
            },
        ]);
        if ($data !== null) {
            curl_setopt($curl, CURLOPT_POSTFIELDS, $data);
        }
        $text = curl_exec($curl);
        $status = (int) curl_getinfo($curl, CURLINFO_RESPONSE_CODE);
        $error = curl_error($curl);
        curl_close($curl);
        if ($text === false || $status === 0) {
            throw new ClientError("$method $url: no answer ($error)");
        }
        $body = json_decode((string) $text, true);
        return [$status, $body ?? $text, $answerHeaders];
    }

    private function url(string $stage, array $params): string
    {
        $params = array_filter($params, fn ($v) => $v !== null);
        if (isset($params['delay']) && !is_string($params['delay'])) {
            $params['delay'] = (int) ($params['delay'] * 1000) . 'ms';
        }
        $query = $params === [] ? '' : '?' . http_build_query($params);
        return "{$this->baseUrl}/v1/stages/" . rawurlencode($stage) . "/messages$query";
    }

    private static function line(mixed $body, string $what): string
    {
        $text = json_encode($body, Protocol::FLAGS);
        if ($text === false) {
            throw new \InvalidArgumentException("$what is not JSON: " . json_last_error_msg());
        }
        return $text;
    }

    private static function retryAfter(?string $value): float
    {
        if ($value === null || $value === '') {
            return 1.0;
        }
        if (is_numeric($value)) {
            return max(0.0, (float) $value);
        }
        $time = strtotime($value);
        return $time === false ? 1.0 : max(0.0, $time - time());
    }

    private static function refused(string $what, int $status, mixed $body): Refused
    {
        $message = is_array($body) ? ($body['error'] ?? json_encode($body)) : (string) $body;
        return new Refused("$what: $status $message", $status, $body);
    }
}
