<?php
// A stand-in for the Twitter API, for `php -S 127.0.0.1:8090 fake_twitter.php`.
// POST /2/tweets {"text": ...} answers 201 {"data": {"id", "text"}}. Like the
// real API it is sometimes down and it rate-limits:
//   TWITTER_OUTAGE=5..15   answers 503 from 5 s to 15 s after it started;
//   TWITTER_RATE=20        answers 429 (Retry-After: 1) beyond 20 a second.
// A request with an Idempotency-Key it saw before gets the first answer
// again, and no second tweet. GET /stats: {"requests", "tweets", "repeated"}.
// State lives in TWITTER_STATE (a folder), so `PHP_CLI_SERVER_WORKERS` may
// serve requests side by side.

$state = getenv('TWITTER_STATE') ?: sys_get_temp_dir() . '/fake-twitter';
@mkdir("$state/keys", 0777, true);

function bump(string $file): int
{
    $f = fopen($file, 'c+');
    flock($f, LOCK_EX);
    $n = (int) stream_get_contents($f) + 1;
    ftruncate($f, 0);
    rewind($f);
    fwrite($f, (string) $n);
    flock($f, LOCK_UN);
    fclose($f);
    return $n;
}

function answer(int $status, array $body, array $headers = []): void
{
    http_response_code($status);
    header('Content-Type: application/json');
    foreach ($headers as $name => $value) {
        header("$name: $value");
    }
    echo json_encode($body, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE);
}

if ($_SERVER['REQUEST_URI'] === '/stats') {
    $read = fn ($name) => (int) @file_get_contents("$state/$name");
    answer(200, ['requests' => $read('requests'), 'tweets' => $read('tweets'), 'repeated' => $read('repeated')]);
    return;
}
if ($_SERVER['REQUEST_METHOD'] !== 'POST' || $_SERVER['REQUEST_URI'] !== '/2/tweets') {
    answer(404, ['error' => 'no such route']);
    return;
}
bump("$state/requests");
if (!file_exists("$state/started")) {
    @file_put_contents("$state/started", (string) microtime(true));
}
$since = microtime(true) - (float) file_get_contents("$state/started");
if (preg_match('/^(\d+)\.\.(\d+)$/', (string) getenv('TWITTER_OUTAGE'), $m) && $since >= $m[1] && $since < $m[2]) {
    answer(503, ['error' => 'over capacity']);
    return;
}
$rate = (int) getenv('TWITTER_RATE');
if ($rate > 0 && bump("$state/second-" . (int) floor($since)) > $rate) {
    answer(429, ['error' => 'too many requests'], ['Retry-After' => '1']);
    return;
}
$body = json_decode((string) file_get_contents('php://input'), true);
if (!is_array($body) || !is_string($body['text'] ?? null) || $body['text'] === '') {
    answer(400, ['error' => 'a tweet needs text']);
    return;
}
$key = $_SERVER['HTTP_IDEMPOTENCY_KEY'] ?? null;
$keyFile = $key === null ? null : "$state/keys/" . hash('sha256', $key);
if ($keyFile !== null && ($f = @fopen($keyFile, 'x')) === false) {
    bump("$state/repeated");
    answer(201, json_decode((string) file_get_contents($keyFile), true) ?? ['data' => ['id' => 'pending']]);
    return;
}
$tweet = ['data' => ['id' => (string) bump("$state/tweets"), 'text' => $body['text']]];
if (isset($f)) {
    fwrite($f, json_encode($tweet));
    fclose($f);
}
answer(201, $tweet);
