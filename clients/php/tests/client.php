<?php
/**
 * Warren\Client against a real `warren supervise --http` (the routes of
 * `warren serve`, and the job keeper that fires callbacks), a real `warren
 * serve` alone (a stage without workers, for 429) and the real broker: send one and a batch, ids from an
 * Idempotency-Key and from a field, a callback, waiting for a job, a 429
 * waited out as its Retry-After says, refused requests, cancel. The 503
 * answers are played by a fake server (`php -S`), which can say exactly
 * which messages the broker confirmed.
 */

declare(strict_types=1);

require __DIR__ . '/harness.php';

use Warren\Client;
use Warren\Client\{Busy, Refused, Timeout, Unavailable, Unknown};

const TOKEN = '0123456789abcdef0123';

function free_port(): int
{
    $socket = stream_socket_server('tcp://127.0.0.1:0');
    $port = (int) substr(strrchr(stream_socket_get_name($socket, false), ':'), 1);
    fclose($socket);
    return $port;
}

function eventually(callable $check, float $limit = 60.0): mixed
{
    $deadline = microtime(true) + $limit;
    while (microtime(true) < $deadline) {
        if ($value = $check()) {
            return $value;
        }
        usleep(200000);
    }
    return $check();
}

/** A fake server answering `$answers` in turn; [base URL, its folder, process]. */
function fake_server(array $answers): array
{
    $dir = sys_get_temp_dir() . '/fake_' . bin2hex(random_bytes(4));
    mkdir($dir);
    file_put_contents("$dir/answers.jsonl", implode('', array_map(fn ($a) => json_encode($a) . "\n", $answers)));
    touch("$dir/seen.jsonl");
    $port = free_port();
    $process = proc_open([PHP_BINARY, '-S', "127.0.0.1:$port", __DIR__ . '/fake_server.php'], [0 => ['file', '/dev/null', 'r'], 1 => ['file', '/dev/null', 'w'], 2 => ['file', '/dev/null', 'w']], $pipes, null, getenv() + ['FAKE_DIR' => $dir]);
    $url = "http://127.0.0.1:$port";
    eventually(fn () => @fsockopen('127.0.0.1', $port) !== false, 10);
    return [$url, $dir, $process];
}

function seen(string $dir): array
{
    return array_map(fn ($l) => json_decode($l, true), file("$dir/seen.jsonl", FILE_IGNORE_NEW_LINES) ?: []);
}

function stop_fake(array $fake): void
{
    proc_terminate($fake[2]);
    proc_close($fake[2]);
    exec('rm -rf ' . escapeshellarg($fake[1]));
}

// --- 503s and lost answers, against the fake server.

$fake = fake_server([
    [503, [], ['error' => '2 of 4 messages confirmed', 'confirmed' => ['a', 'c']]],
    [202, [], ['ids' => ['b', 'd']]],
]);
$sent = (new Client($fake[0]))->sendMany('s', array_map(fn ($k) => ['k' => $k], ['a', 'b', 'c', 'd']), idField: 'k');
$seen = seen($fake[1]);
check($sent->ids === ['a', 'b', 'c', 'd'] && $sent->attempts === 2, 'a batch 503: every id, in two requests', json_encode($sent));
check(count($seen) === 2 && str_contains($seen[1]['uri'], 'id_field=k')
    && array_map(fn ($l) => json_decode($l, true)['k'], explode("\n", trim($seen[1]['body']))) === ['b', 'd'],
    'a batch 503: only the unconfirmed are sent again, with the same ids', json_encode($seen));
stop_fake($fake);

$fake = fake_server([
    [503, [], ['error' => 'the broker is unreachable; nothing was sent', 'confirmed' => []]],
    [202, [], ['ids' => ['k1'], 'job' => 'k1']],
]);
$sent = (new Client($fake[0]))->send('s', ['n' => 1], key: 'k1', delay: '30s', callback: 'http://x/y');
$seen = seen($fake[1]);
check($sent->job === 'k1' && array_column(array_column($seen, 'headers'), 'idempotency-key') === ['k1', 'k1'], 'a single 503: sent again with the same key', json_encode($seen));
check(str_contains($seen[0]['uri'], 'delay=30s') && str_contains($seen[0]['uri'], 'callback='), 'delay and callback are in the query', $seen[0]['uri']);
stop_fake($fake);

$fake = fake_server(array_fill(0, 50, [503, [], ['error' => 'the broker is unreachable; nothing was sent', 'confirmed' => []]]));
try {
    (new Client($fake[0], timeout: 1.0))->send('s', ['n' => 1]);
    check(false, '503 until the time limit throws Unavailable');
} catch (Unavailable $e) {
    check($e->confirmed === [] && count(seen($fake[1])) >= 2, '503 until the time limit throws Unavailable, after resending', json_encode(seen($fake[1])));
}
stop_fake($fake);

$fake = fake_server([
    [503, [], ['error' => '1 of 3 messages confirmed', 'confirmed' => ['x1']]],
    [202, [], ['ids' => ['x2', 'x3']]],
]);
$sent = (new Client($fake[0]))->sendMany('s', [['n' => 1], ['n' => 2], ['n' => 3]]);
$seen = seen($fake[1]);
check($sent->ids === ['x1', 'x2', 'x3'] && array_map(fn ($l) => json_decode($l, true)['n'], explode("\n", trim($seen[1]['body']))) === [2, 3],
    'a batch without ids: the lines after the confirmed ones are sent again', json_encode($seen));
stop_fake($fake);

$fake = fake_server([
    [503, [], ['error' => '1 of 2 confirmed', 'confirmed' => ['s1'], 'ids' => ['s1', 's2']]],
    [202, [], ['ids' => ['s2'], 'job' => 's2']],
]);
$sent = (new Client($fake[0]))->sendMany('s', [['n' => 1], ['n' => 2]]);
$seen = seen($fake[1]);
check($sent->ids === ['s1', 's2'] && ($seen[1]['headers']['idempotency-key'] ?? null) === 's2', 'a 503 naming the ids: each sent again with its id', json_encode($seen));
stop_fake($fake);

$silent = stream_socket_server('tcp://127.0.0.1:0');
$url = 'http://' . stream_socket_get_name($silent, false);
try {
    (new Client($url, timeout: 1.0))->sendMany('s', [['n' => 1]]);
    check(false, 'no answer to a batch without ids: Unknown, not resent');
} catch (Unknown) {
    check(true, 'no answer to a batch without ids: Unknown, not resent');
}
try {
    (new Client($url, timeout: 1.0))->send('s', ['n' => 1]);
    check(false, 'no answer to a single message until the time limit: Timeout');
} catch (Timeout) {
    check(true, 'no answer to a single message until the time limit: Timeout');
}
fclose($silent);

// --- Against the real warren serve.

const PROGRAM = <<<'PHP'
<?php
require getenv('WARREN_PHP_AUTOLOAD');
(new Warren\Worker())
    ->stage('double', fn (array $body, Warren\Context $ctx) => ['n' => $body['n'], 'double' => $body['n'] * 2, 'job' => $ctx->job])
    ->stage('held', fn (array $body, Warren\Context $ctx) => null)
    ->serve();
PHP;
const STAGES = <<<'YAML'
double:
  exec: {program}
  concurrency: 4
  outputs: [out]
held:
  exec: {program}
out:
  sink: { path: {dir}/out.jsonl }
YAML;

/** A tracked pipeline with the serve settings. */
function tracked(): Pipeline
{
    $p = new Pipeline(PROGRAM, STAGES);
    file_put_contents($p->file, str_replace("stages:\n", "jobs: { track: true }\nserve: { token: \"" . TOKEN . "\", max_backlog: 3 }\nstages:\n", file_get_contents($p->file)));
    return $p;
}

$processes = [];
/** Starts `warren ARGS` (or `sh -c ...`) in the pipeline's folder, logging to LOG.log there. */
function start(Pipeline $p, string $log, array $args): void
{
    $command = $args[0] === 'sh' ? $args : array_merge([Pipeline::warren()], $args);
    $GLOBALS['processes'][] = proc_open($command, [0 => ['file', '/dev/null', 'r'], 1 => ['file', '/dev/null', 'w'], 2 => ['file', "{$p->dir}/$log.log", 'a']], $pipes, $p->dir, getenv() + ['RUST_LOG' => 'info']);
}

function ready_at(string $base): bool
{
    $curl = curl_init("$base/readyz");
    curl_setopt_array($curl, [CURLOPT_RETURNTRANSFER => true, CURLOPT_HTTPHEADER => ['Authorization: Bearer ' . TOKEN], CURLOPT_TIMEOUT => 5]);
    curl_exec($curl);
    return curl_getinfo($curl, CURLINFO_RESPONSE_CODE) === 200;
}

$p = tracked();
$port = free_port();
$base = "http://127.0.0.1:$port";
$said = fn () => (string) @file_get_contents("{$p->dir}/supervisor.log");
start($p, 'supervisor', ['supervise', $p->file, '--poll', '500ms', '--http', "127.0.0.1:$port"]);
check(eventually(fn () => ready_at($base)), 'warren supervise --http is ready', $said());
$warren = new Client($base, token: TOKEN, timeout: 60.0);

$key = 'order-' . hrtime(true);
$sent = $warren->send('double', ['n' => 21], key: $key);
$again = $warren->send('double', ['n' => 21], key: $key);
check($sent->job === $key && $again->job === $key, 'send with a key: the key is the job, a resend the same job');
$state = $warren->wait($key, 120.0);
check($state['state'] === 'done', 'wait: the job is done', json_encode($state));
$records = eventually(fn () => array_values(array_filter($p->results(), fn ($r) => $r['job'] === $key)));
check($records === [['n' => 21, 'double' => 42, 'job' => $key]], 'the sink has it once', json_encode($records) . $said());

$sent = $warren->send('double', ['n' => 5]);
check(strlen((string) $sent->job) === 32 && $warren->wait($sent->job, 120.0)['state'] === 'done', 'a key is made up when none is given');

$base_id = hrtime(true);
$rows = array_map(fn ($n) => ['order' => "o$base_id-$n", 'n' => $n], range(0, 6));
$sent = $warren->sendMany('double', $rows, idField: 'order');
check($sent->ids === array_column($rows, 'order'), 'sendMany with idField: the ids are the field', json_encode($sent->ids));
$states = array_map(fn ($id) => $warren->wait($id, 120.0)['state'], $sent->ids);
check(array_unique($states) === ['done'], 'sendMany: every job done', json_encode($states));
$sent = $warren->sendMany('double', [['n' => 100], ['n' => 101]]);
check(count($sent->ids) === 2 && count(array_filter($sent->ids)) === 2, 'sendMany without ids: the server\'s', json_encode($sent->ids));

$hook = fake_server([]);
$sent = $warren->send('double', ['n' => 8], callback: $hook[0] . '/hook');
$posted = eventually(fn () => array_values(array_filter(seen($hook[1]), fn ($s) => $s['uri'] === '/hook')), 120.0);
check($posted !== [] && ($posted[0]['headers']['idempotency-key'] ?? null) === $sent->job && json_decode($posted[0]['body'], true)['state'] === 'done',
    'the callback gets the settled job, its id as Idempotency-Key', json_encode($posted) . $said());
stop_fake($hook);

try {
    $warren->send('no_such_stage', ['n' => 1]);
    check(false, 'an unknown stage is Refused (404)');
} catch (Refused $e) {
    check($e->status === 404 && str_contains($e->getMessage(), 'no stage `no_such_stage`'), 'an unknown stage is Refused (404)', $e->getMessage());
}
try {
    (new Client($base, token: 'wrong-token-wrong-token'))->send('double', ['n' => 1]);
    check(false, 'a wrong token is Refused (401)');
} catch (Refused $e) {
    check($e->status === 401, 'a wrong token is Refused (401)', $e->getMessage());
}

// 429: `warren serve` alone; stage `held` has no worker until below, its
// queue grows over serve.max_backlog (3).
$q = tracked();
$port = free_port();
$heldBase = "http://127.0.0.1:$port";
start($q, 'serve', ['serve', $q->file, '--listen', "127.0.0.1:$port"]);
check(eventually(fn () => ready_at($heldBase)), 'warren serve is ready');
$status = 0;
$retryAfter = null;
for ($n = 0; $n < 40 && $status !== 429; $n++) {
    $curl = curl_init("$heldBase/v1/stages/held/messages");
    curl_setopt_array($curl, [CURLOPT_RETURNTRANSFER => true, CURLOPT_POSTFIELDS => json_encode(['n' => $n]), CURLOPT_TIMEOUT => 30,
        CURLOPT_HTTPHEADER => ['Authorization: Bearer ' . TOKEN, 'Content-Type: application/json'],
        CURLOPT_HEADERFUNCTION => function ($c, $line) use (&$retryAfter) {
            if (stripos($line, 'retry-after:') === 0) {
                $retryAfter = (float) trim(substr($line, 12));
            }
            return strlen($line);
        }]);
    curl_exec($curl);
    $status = curl_getinfo($curl, CURLINFO_RESPONSE_CODE);
    usleep(300000);
}
check($status === 429 && $retryAfter > 0, "over the backlog: 429 with Retry-After ($retryAfter)");
$held = new Client($heldBase, token: TOKEN);
try {
    $held->send('held', ['n' => 'busy'], timeout: 1.0);
    check(false, 'within a short time limit: Busy');
} catch (Busy $e) {
    check($e->retryAfter === $retryAfter, 'within a short time limit: Busy, with the server\'s advice');
}
// Within a long one: waits Retry-After between tries, and gets through
// once a worker took the backlog (started 2 s from now, in the background).
start($q, 'held', ['sh', '-c', 'sleep 2; exec "$0" worker "$1" --stage held', Pipeline::warren(), $q->file]);
$started = microtime(true);
$sent = $held->send('held', ['n' => 'through'], timeout: 120.0);
$took = microtime(true) - $started;
check($sent->attempts >= 2 && $took >= $retryAfter * ($sent->attempts - 1), "a 429 is waited out as Retry-After says ({$sent->attempts} tries in {$took}s)");

$sent = $warren->send('double', ['n' => 1]);
try {
    $state = $warren->cancel($sent->job);
    check(in_array($state['state'] ?? 'cancelled', ['cancelled', 'done'], true), 'cancel', json_encode($state));
} catch (Refused $e) {
    if ($e->status !== 405) {
        throw $e;
    }
    echo "# skipped: cancel (this warren serve has no DELETE /v1/jobs/{id} yet)\n";
}

foreach ($processes as $process) {
    proc_terminate($process);
}
foreach ($processes as $process) {
    proc_close($process);
}
$p->close();
$q->close();
finish();
