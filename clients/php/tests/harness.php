<?php
/**
 * What the PHP tests share: `check()` prints `ok - ...` / `not ok - ...`
 * (counted by tests/clients.rs), and `Pipeline` runs a pipeline whose exec
 * stages are a PHP program with the real `warren` against the real broker.
 *
 * WARREN_PHP_AUTOLOAD names the autoloader of a Composer project that
 * installed the package (tests/clients.rs makes one); WARREN_BIN the
 * binary (default: target/debug/warren of this repository); AMQP_URL the
 * broker.
 */

declare(strict_types=1);

$autoload = getenv('WARREN_PHP_AUTOLOAD');
if (!$autoload || !is_file($autoload)) {
    fwrite(STDERR, "WARREN_PHP_AUTOLOAD must name vendor/autoload.php of a project that installed the package\n");
    exit(2);
}
require $autoload;

$GLOBALS['failures'] = 0;

function check(bool $ok, string $what, string $said = ''): void
{
    if ($ok) {
        echo "ok - $what\n";
    } else {
        $GLOBALS['failures']++;
        echo "not ok - $what\n$said\n";
    }
}

function finish(): never
{
    $failures = $GLOBALS['failures'];
    echo $failures === 0 ? "all passed\n" : "$failures failed\n";
    exit($failures === 0 ? 0 : 1);
}

/** Runs a command: [exit code, stdout and stderr]. */
function run_command(array $command, ?string $cwd = null, ?array $env = null): array
{
    $process = proc_open($command, [0 => ['file', '/dev/null', 'r'], 1 => ['pipe', 'w'], 2 => ['redirect', 1]], $pipes, $cwd, $env);
    $out = stream_get_contents($pipes[1]);
    return [proc_close($process), $out];
}

final class Pipeline
{
    public readonly string $dir;
    public readonly string $name;
    public readonly string $file;

    /** `$program` is PHP code (it starts with `<?php` and requires the
     *  autoloader named by WARREN_PHP_AUTOLOAD); `$stages` the YAML of the
     *  stages, where `{program}` is the exec stage's command and `{dir}` the
     *  pipeline's folder. */
    public function __construct(string $program, string $stages)
    {
        $this->name = 'tphp_' . bin2hex(random_bytes(5));
        $this->dir = sys_get_temp_dir() . "/{$this->name}";
        mkdir($this->dir);
        file_put_contents("{$this->dir}/stage.php", $program);
        $command = '{ command: [' . PHP_BINARY . ", {$this->dir}/stage.php], env: { WARREN_PHP_AUTOLOAD: " . getenv('WARREN_PHP_AUTOLOAD') . ' } }';
        $stages = str_replace(['{program}', '{dir}'], [$command, $this->dir], $stages);
        $this->file = "{$this->dir}/pipeline.yaml";
        file_put_contents($this->file, "pipeline: {$this->name}\nstages:\n" . preg_replace('/^/m', '  ', $stages));
    }

    /** `warren run` on the inputs: [exit code, what it printed]. */
    public function run(array $inputs): array
    {
        file_put_contents("{$this->dir}/in.jsonl", implode('', array_map(fn ($i) => json_encode($i) . "\n", $inputs)));
        $env = getenv() + ['RUST_LOG' => 'info'];
        return run_command([self::warren(), 'run', $this->file, '--input', "{$this->dir}/in.jsonl"], $this->dir, $env);
    }

    /** The records of a sink file. */
    public function results(string $name = 'out.jsonl'): array
    {
        $lines = is_file("{$this->dir}/$name") ? file("{$this->dir}/$name", FILE_IGNORE_NEW_LINES) : [];
        return array_map(fn ($l) => json_decode($l, true), $lines);
    }

    /** `warren dlq FILE STAGE list`. */
    public function dead(string $stage): string
    {
        return run_command([self::warren(), 'dlq', $this->file, $stage, 'list'], $this->dir)[1];
    }

    public static function warren(): string
    {
        return getenv('WARREN_BIN') ?: dirname(__DIR__, 3) . '/target/debug/warren';
    }

    /** Deletes the pipeline's queues and exchanges, and its folder. */
    public function close(): void
    {
        // The queues whose names start with `{pipeline}.`, in one call.
        shell_exec('rabbitmqctl eval ' . escapeshellarg("P = <<\"{$this->name}.\">>, length([rabbit_amqqueue:delete(Q, false, false, <<\"test\">>) || Q <- rabbit_amqqueue:list(<<\"/\">>), binary:longest_common_prefix([element(4, amqqueue:get_name(Q)), P]) =:= byte_size(P)]).") . ' > /dev/null');
        // Its exchange and its delay cascade's (`{pipeline}.delay.*`).
        shell_exec('rabbitmqctl eval ' . escapeshellarg("N = <<\"{$this->name}\">>, P = <<\"{$this->name}.\">>, length([rabbit_exchange:delete(element(2, X), false, <<\"test\">>) || X <- rabbit_exchange:list(<<\"/\">>), element(4, element(2, X)) =:= N orelse binary:longest_common_prefix([element(4, element(2, X)), P]) =:= byte_size(P)]).") . ' > /dev/null');
        exec('rm -rf ' . escapeshellarg($this->dir));
    }
}
