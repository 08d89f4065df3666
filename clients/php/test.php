<?php
/**
 * Tests of WarrenStage.php against the real warren binary and broker: a
 * pipeline whose exec stage is a handler written with the helper runs with
 * `warren run`, and what reached the sink and the dead-letter queue is read.
 *
 *     php clients/php/test.php
 *
 * WARREN_BIN names the binary (default: target/debug/warren of this
 * repository); AMQP_URL the broker. Exits 1 when a check fails.
 */

declare(strict_types=1);

$here = __DIR__;
$root = dirname($here, 2);
$warren = getenv('WARREN_BIN') ?: "$root/target/debug/warren";
$failures = 0;

function check(bool $ok, string $what, string $said = ''): void
{
    global $failures;
    if ($ok) {
        echo "ok - $what\n";
    } else {
        $failures++;
        echo "not ok - $what\n$said\n";
    }
}

function run(array $command, string $cwd): array
{
    $process = proc_open($command, [1 => ['pipe', 'w'], 2 => ['pipe', 'w']], $pipes, $cwd);
    $out = stream_get_contents($pipes[1]) . stream_get_contents($pipes[2]);
    return [proc_close($process), $out];
}

$name = 'tphp_' . bin2hex(random_bytes(5));
$dir = sys_get_temp_dir() . "/$name";
mkdir($dir);
file_put_contents("$dir/stage.php", <<<'PHP'
<?php
require getenv('WARREN_PHP_HELPER');
Warren\Stage::run(function (array $body, Warren\Context $ctx): void {
    echo "this goes to the log, not the protocol\n";
    if (!empty($body['dead'])) {
        throw new Warren\Dead('no such photo');
    }
    if (!empty($body['flaky']) && $ctx->attempt === 1) {
        throw new RuntimeException('first try fails');
    }
    if (!empty($body['later']) && $ctx->attempt === 1) {
        throw new Warren\Retry('come back', 0.5);
    }
    $ctx->emit(['n' => $body['n'], 'attempt' => $ctx->attempt, 'job' => $ctx->job]);
    if (!empty($body['other'])) {
        $ctx->emitTo('other', ['n' => $body['n']]);
    }
});
PHP);
$php = PHP_BINARY;
file_put_contents("$dir/pipeline.yaml", <<<YAML
pipeline: $name
stages:
  php:
    exec: { command: [$php, $dir/stage.php], env: { WARREN_PHP_HELPER: $here/WarrenStage.php } }
    concurrency: 1
    prefetch: 4
    retry: { attempts: 3, backoff: [200ms] }
    outputs: [out, other]
  out:
    sink: { path: $dir/out.jsonl }
  other:
    sink: { path: $dir/other.jsonl }
YAML);
$inputs = [['n' => 1], ['n' => 2, 'flaky' => true], ['n' => 3, 'later' => true], ['n' => 4, 'dead' => true], ['n' => 5, 'other' => true]];
file_put_contents("$dir/in.jsonl", implode('', array_map(fn ($i) => json_encode($i) . "\n", $inputs)));

[$code, $said] = run([$warren, 'run', "$dir/pipeline.yaml", '--input', "$dir/in.jsonl"], $dir);
check($code === 1, 'warren run ends with exit 1 for the one dead letter', $said);
$results = array_map(fn ($l) => json_decode($l, true), file("$dir/out.jsonl", FILE_IGNORE_NEW_LINES) ?: []);
usort($results, fn ($a, $b) => $a['n'] <=> $b['n']);
check(array_column($results, 'n') === [1, 2, 3, 5], 'done and retried messages reach the sink once', $said);
check(array_column($results, 'attempt') === [1, 2, 2, 1], 'an exception and a Retry each cost one attempt', json_encode($results));
check(count(array_filter(array_column($results, 'job'))) === 4, 'the job id is given to the handler');
// emit without a target goes to every output; emitTo to the one named.
$other = array_map(fn ($l) => json_decode($l, true), file("$dir/other.jsonl", FILE_IGNORE_NEW_LINES) ?: []);
$others = array_column($other, 'n');
sort($others);
check($others === [1, 2, 3, 5, 5] && in_array(['n' => 5], $other, true), 'emit reaches every output, emitTo one', json_encode($other));
[, $dead] = run([$warren, 'dlq', "$dir/pipeline.yaml", 'php', 'list'], $dir);
check(str_contains($dead, '1 dead letters') && str_contains($dead, 'no such photo'), 'Dead dead-letters with its reason', $dead);

// Clean up the broker and the files.
$queues = explode("\n", (string) shell_exec('rabbitmqctl list_queues name -q --no-table-headers'));
foreach ($queues as $queue) {
    if (str_starts_with(trim($queue), "$name.")) {
        shell_exec('rabbitmqctl delete_queue ' . escapeshellarg(trim($queue)) . ' > /dev/null');
    }
}
shell_exec('rabbitmqctl eval ' . escapeshellarg("rabbit_exchange:delete(rabbit_misc:r(<<\"/\">>, exchange, <<\"$name\">>), false, <<\"test\">>).") . ' > /dev/null');
exec('rm -rf ' . escapeshellarg($dir));

echo $failures === 0 ? "all passed\n" : "$failures failed\n";
exit($failures === 0 ? 0 : 1);
