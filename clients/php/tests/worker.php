<?php
/**
 * The PHP package's worker against the real warren binary and broker:
 * pipelines whose exec stages are handlers written with it run with
 * `warren run`, and what reached the sinks and the dead-letter queues is
 * read. The package is the one Composer installed (WARREN_PHP_AUTOLOAD).
 */

declare(strict_types=1);

require __DIR__ . '/harness.php';

$loaded = (new ReflectionClass(Warren\Worker::class))->getFileName();
check(!str_starts_with($loaded, dirname(__DIR__) . '/'), "the package is the installed one ($loaded)");

// The first API (Stage::run, one handler for every stage): emit, emitTo,
// Dead, Retry with after, an exception retried.
$p = new Pipeline(<<<'PHP'
<?php
require getenv('WARREN_PHP_AUTOLOAD');
Warren\Stage::run(function (array $body, Warren\Context $ctx): void {
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
PHP, <<<'YAML'
php:
  exec: {program}
  concurrency: 1
  prefetch: 4
  retry: { attempts: 3, backoff: [200ms] }
  outputs: [out, other]
out:
  sink: { path: {dir}/out.jsonl }
other:
  sink: { path: {dir}/other.jsonl }
YAML);
[$code, $said] = $p->run([['n' => 1], ['n' => 2, 'flaky' => true], ['n' => 3, 'later' => true], ['n' => 4, 'dead' => true], ['n' => 5, 'other' => true]]);
check($code === 1, 'Stage::run: warren run ends with exit 1 for the one dead letter', $said);
$results = $p->results();
usort($results, fn ($a, $b) => $a['n'] <=> $b['n']);
check(array_column($results, 'n') === [1, 2, 3, 5], 'Stage::run: done and retried messages reach the sink once', $said);
check(array_column($results, 'attempt') === [1, 2, 2, 1], 'Stage::run: an exception and a Retry each cost one attempt', json_encode($results));
check(count(array_filter(array_column($results, 'job'))) === 4, 'Stage::run: the job id is given to the handler');
$other = $p->results('other.jsonl');
$others = array_column($other, 'n');
sort($others);
check($others === [1, 2, 3, 5, 5] && in_array(['n' => 5], $other, true), 'Stage::run: emit reaches every output, emitTo one', json_encode($other));
$dead = $p->dead('php');
check(str_contains($dead, '1 dead letters') && str_contains($dead, 'no such photo'), 'Stage::run: Dead dead-letters with its reason', $dead);
$p->close();

// Two stages in one program (Worker::stage), dispatched on each message's
// stage; returned values emitted (a list: each item; an Emit: to its
// output); echo, print, var_dump, fwrite(STDOUT) and subprocesses go to
// the log, not into the protocol; the context; progress (in the log until
// warren reads it); a handler's mistake said with where, its trace logged.
$p = new Pipeline(<<<'PHP'
<?php
require getenv('WARREN_PHP_AUTOLOAD');
use Warren\{Context, Emit, Worker};

(new Worker())
    ->stage('split', function (array $body, Context $ctx): array {
        echo "echoed-{$ctx->id}\n";
        print("printed-{$ctx->id}\n");
        var_dump(['dumped' => $ctx->id]);
        fwrite(STDOUT, "stdout-constant-{$ctx->id}\n");
        proc_close(proc_open(['ls', __DIR__], [], $pipes));   // inherits descriptor 1
        passthru('echo passthru-' . escapeshellarg($ctx->id));
        if ($body['numbers'] === []) {
            return ['not JSON' => NAN];
        }
        return array_map(fn ($n) => ['n' => $n, 'from' => $ctx->stage], $body['numbers']);
    })
    ->stage('square', function (array $body, Context $ctx) {
        $ctx->progress(0.5, 'half way');
        if ($body['n'] === 0) {
            return new Emit(['zero' => true, 'job' => $ctx->job], 'zeros');
        }
        if ($body['n'] < 0) {
            throw new DomainException("negative: {$body['n']}");
        }
        return ['n' => $body['n'], 'square' => $body['n'] ** 2, 'from' => $body['from'],
                'attempt' => $ctx->attempt, 'deadline_ms' => $ctx->deadlineMs,
                'ahead' => $ctx->deadline > microtime(true) && $ctx->secondsLeft() <= $ctx->deadlineMs / 1000];
    })
    ->serve();
PHP, <<<'YAML'
split:
  exec: {program}
  concurrency: 4
  retry: { attempts: 2, backoff: [100ms] }
  outputs: [square]
square:
  exec: {program}
  concurrency: 4
  timeout: 20s
  retry: { attempts: 2, backoff: [100ms] }
  outputs: [out, zeros]
out:
  sink: { path: {dir}/out.jsonl }
zeros:
  sink: { path: {dir}/zeros.jsonl }
YAML);
touch("{$p->dir}/listed-by-ls.txt");
[$code, $said] = $p->run([['numbers' => [0, 1, 2]], ['numbers' => [3, -1]], ['numbers' => []]]);
check($code === 1, 'two stages: warren run ends with exit 1 for the two dead letters', $said);
$squares = $p->results();
usort($squares, fn ($a, $b) => $a['n'] <=> $b['n']);
check(array_map(fn ($r) => [$r['n'], $r['square'], $r['from']], $squares) === [[1, 1, 'split'], [2, 4, 'split'], [3, 9, 'split']],
    'two stages: a returned list emits each item, dispatched to the stage of each message', $said);
$zeros = array_values(array_filter($p->results('zeros.jsonl'), fn ($r) => isset($r['zero'])));
check(count($zeros) === 1 && $zeros[0]['job'] !== '', 'two stages: a returned Emit goes to its output', json_encode($p->results('zeros.jsonl')));
foreach (['echoed-', 'printed-', '["dumped"]=>', 'stdout-constant-', 'passthru-'] as $text) {
    check(str_contains($said, $text), "the log has what the handler wrote: $text", $said);
}
check(str_contains($said, 'listed-by-ls.txt'), 'the log has the output of `ls`', $said);
check(!str_contains($said, 'not the protocol') && !str_contains($said, 'killed'), 'nothing broke the protocol', $said);
$ctx = $squares[0] ?? [];
check(($ctx['attempt'] ?? 0) === 1 && ($ctx['deadline_ms'] ?? 0) > 0 && ($ctx['deadline_ms'] ?? 0) <= 20000 && ($ctx['ahead'] ?? false),
    'the context: attempt and deadline', json_encode($ctx));
// warren reads progress lines (WARREN_EXEC_FEATURES says so): the report
// went on the protocol, taken, not to the log.
check(!str_contains($said, '50% half way'), 'progress is a protocol line, not in the log', $said);
$dead = $p->dead('split') . $p->dead('square');
check(str_contains($dead, 'the value returned by the handler (array) is not JSON'), 'a returned value that is not JSON is said', $dead);
check(str_contains($dead, 'DomainException: negative: -1 (in the handler of stage `square` at stage.php:'), 'an exception is said with where', $dead);
check(str_contains($said, 'failed on message') && str_contains($said, '#0 '), 'its trace is in the log', $said);
$p->close();

finish();
