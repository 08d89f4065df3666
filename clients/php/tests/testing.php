<?php
/**
 * Warren\Testing: a handler run in a test, without warren or a broker,
 * ends as it would in the real worker; and the protocol's own descriptor
 * with and without FFI.
 */

declare(strict_types=1);

require __DIR__ . '/harness.php';

use Warren\{Context, Dead, Emit, Finished, Retry, Testing, Worker};

$lookup = function (array $body, Context $ctx): array {
    if (!isset($body['company'])) {
        throw new Dead('no company name');
    }
    if (!empty($body['busy'])) {
        throw new Retry('directory busy', 30);
    }
    $ctx->progress(0.5, 'looked up');
    return ['company' => $body['company'], 'attempt' => $ctx->attempt, 'job' => $ctx->job];
};

$r = Testing::run($lookup, ['company' => 'Acme'], id: 'c7.2', attempt: 2);
check($r->isDone() && $r->emitted === [['company' => 'Acme', 'attempt' => 2, 'job' => 'c7']], 'done, with the returned body emitted', json_encode($r));
check($r->progress === [[0.5, 'looked up']], 'progress is recorded', json_encode($r->progress));
$r = Testing::run($lookup, []);
check($r->isDead() && $r->reason === 'no company name', 'Dead: dead with its reason');
$r = Testing::run($lookup, ['company' => 'Acme', 'busy' => true]);
check($r->isRetried() && $r->reason === 'directory busy' && $r->after === 30.0, 'Retry: retried with its reason and after');

$r = Testing::run(function (array $body, Context $ctx): void {
    $ctx->emit(['first' => 1]);
    throw new ValueError('bad row');
}, [], stage: 'rows');
check($r->isRetried() && $r->emitted === [] && str_contains((string) $r->reason, 'ValueError: bad row (in the handler of stage `rows` at testing.php:'),
    'an error retries, says where, and drops what was emitted', (string) $r->reason);

$r = Testing::run(fn (array $b, Context $c) => [['n' => 0], new Emit(1, 'odd'), new Emit([1, 2])], []);
check($r->emits === [['to' => null, 'body' => ['n' => 0]], ['to' => 'odd', 'body' => 1], ['to' => null, 'body' => [1, 2]]],
    'a returned list emits each item, an Emit to its output', json_encode($r->emits));
check(Testing::run(fn (array $b, Context $c) => ['n' => 1], [])->emitted === [['n' => 1]], 'a returned map is one body');
check(Testing::run(fn (array $b, Context $c) => null, [])->emits === [], 'null emits nothing');
$gen = function (array $b, Context $c) {
    yield ['n' => 1];
    yield ['n' => 2];
};
check(Testing::run($gen, [])->emitted === [['n' => 1], ['n' => 2]], 'a generator emits each item');

$worker = (new Worker())->stage('double', fn (array $body, Context $ctx) => ['n' => $body['n'] * 2]);
check(Testing::run($worker, ['n' => 4], stage: 'double')->emitted === [['n' => 8]], 'a worker picks the handler of the stage');
$r = Testing::run($worker, ['n' => 4], stage: 'triple');
check($r->isRetried() && str_contains((string) $r->reason, 'no handler for stage `triple`'), 'no handler for the stage is said', (string) $r->reason);

check(str_contains((string) Testing::run(fn ($b, $c) => ['x' => NAN], [])->reason, 'is not JSON'), 'NAN is not JSON, said');
$kept = null;
Testing::run(function ($b, Context $c) use (&$kept) {
    $kept = $c;
}, []);
try {
    $kept->emit(['late' => true]);
    check(false, 'emit after the handler returned throws Finished');
} catch (Finished) {
    check(true, 'emit after the handler returned throws Finished');
}
$r = Testing::run(fn ($b, $c) => throw new Retry('x', -1), []);
check(str_contains((string) $r->reason, 'takes seconds >= 0'), 'a negative Retry after is said', (string) $r->reason);

// The protocol's own descriptor, with FFI and without: what the program
// echoes, prints, writes to php://stdout or runs (`ls`) goes to stderr;
// only the protocol line reaches stdout.
foreach ([true, false] as $ffi) {
    $script = tempnam(sys_get_temp_dir(), 'fd') . '.php';
    file_put_contents($script, "<?php\nrequire getenv('WARREN_PHP_AUTOLOAD');\n"
        . "\$early = fopen('php://stdout', 'w');\n"
        . '$p = Warren\Worker::protocolStream(' . var_export($ffi, true) . ");\n"
        . ($ffi ? "fwrite(\$early, \"early\\n\");\n" : '')
        . "echo \"echoed\\n\"; print(\"printed\\n\"); var_dump(1); system('ls -d /');\n"
        . "fwrite(fopen('php://stdout', 'w'), \"php-stdout\\n\");\n"
        . "fwrite(\$p, \"{\\\"id\\\":\\\"a\\\",\\\"done\\\":true}\\n\");\n");
    $process = proc_open([PHP_BINARY, $script], [1 => ['pipe', 'w'], 2 => ['pipe', 'w']], $pipes);
    $stdout = stream_get_contents($pipes[1]);
    $stderr = stream_get_contents($pipes[2]);
    proc_close($process);
    unlink($script);
    $how = $ffi ? 'with FFI' : 'without FFI';
    check($stdout === "{\"id\":\"a\",\"done\":true}\n", "$how: only the protocol is on stdout", $stdout);
    check(str_contains($stderr, ($ffi ? "early\n" : '') . "echoed\nprinted\nint(1)\n/\nphp-stdout\n"), "$how: the rest is on stderr", $stderr);
}

finish();
